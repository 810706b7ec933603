//! nginx from the system's packages, started on loopback with a config of
//! the test's own, stopped (by its PID) when dropped.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Nginx {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// The nginx binary: on the PATH, or where Debian puts it.
fn binary() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("nginx");
        if p.is_file() {
            return p;
        }
    }
    let debian = PathBuf::from("/usr/sbin/nginx");
    assert!(
        debian.is_file(),
        "these tests need nginx (Debian: apt-get install nginx-light; .ci/run installs it)"
    );
    debian
}

impl Nginx {
    /// nginx serving one server on 127.0.0.1: `listen` is what follows the
    /// address on the `listen` line (`"http2"` for h2c), `http` goes in
    /// the `http` block and `server` in the `server` block. The files of
    /// `www` are served from the root.
    pub fn start(listen: &str, http: &str, server: &str, www: &[(&str, &[u8])]) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("www");
        std::fs::create_dir(&root).unwrap();
        for (name, bytes) in www {
            std::fs::write(root.join(name), bytes).unwrap();
        }
        // A port nobody holds now; nginx may lose it in the meantime, and
        // then another is tried.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let d = dir.path().display();
            let conf = format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\n\
                 error_log {d}/error.log warn;\npid {d}/nginx.pid;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{\n  access_log off;\n  default_type text/html;\n\
                 client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
                 scgi_temp_path {d}/scgi;\n  {http}\n\
                 server {{\n    listen 127.0.0.1:{port} {listen};\n    root {root};\n    {server}\n  }}\n}}\n",
                root = root.display(),
            );
            let path = dir.path().join("nginx.conf");
            std::fs::write(&path, conf).unwrap();
            let mut child = Command::new(binary())
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nginx");
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Nginx { child, port, dir };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
        panic!("nginx did not start: {log}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What nginx wrote in its error log.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
