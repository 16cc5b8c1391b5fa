//! A real OpenLDAP `slapd` for tests and benchmarks: a generated configuration and database in a
//! fresh directory, listening on a random loopback port. Needs Debian's `slapd` and `ldap-utils`
//! (installed by `scripts/test`).

use std::{
    io::{self, BufRead, BufReader, Write},
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
};

/// The suffix of the test directory.
pub const BASE: &str = "dc=example,dc=gouv,dc=fr";
/// The directory's root account (not limited by `sizelimit`), used to change entries in tests.
pub const ROOT_DN: &str = "cn=admin,dc=example,dc=gouv,dc=fr";
pub const ROOT_PASSWORD: &str = "root-secret";

pub struct Slapd {
    dir: PathBuf,
    port: u16,
    /// The `ldaps://` port, when started with a certificate.
    tls_port: Option<u16>,
    child: Option<Child>,
}

/// A certificate and its key (PEM) for `ldaps://` and StartTLS.
pub struct Tls<'a> {
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
}

impl Slapd {
    /// Creates the directory from `ldif` (entries below [`BASE`]; the suffix entry is added) and
    /// starts slapd. Searches by other accounts than the root return at most `page_limit`
    /// entries unless paged (RFC 2696), as Active Directory's 1,000 do.
    pub fn start(ldif: &str, page_limit: u32) -> io::Result<Self> {
        Self::start_with(ldif, page_limit, None)
    }

    /// [`Slapd::start`], also serving `ldaps://` and StartTLS with the given certificate.
    pub fn start_with(ldif: &str, page_limit: u32, tls: Option<Tls<'_>>) -> io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("hemicycle-slapd-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(dir.join("data"))?;
        let tls_lines = match &tls {
            Some(tls) => {
                std::fs::write(dir.join("cert.pem"), tls.cert_pem)?;
                std::fs::write(dir.join("key.pem"), tls.key_pem)?;
                format!("TLSCertificateFile {d}/cert.pem\nTLSCertificateKeyFile {d}/key.pem\n", d = dir.display())
            }
            None => String::new(),
        };
        let config = format!(
            "{tls_lines}include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include /etc/ldap/schema/nis.schema\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             pidfile {dir}/slapd.pid\n\
             sizelimit size.soft={page_limit} size.hard={page_limit} size.pr={page_limit} size.prtotal=unlimited\n\
             database mdb\n\
             maxsize 1073741824\n\
             suffix \"{BASE}\"\n\
             rootdn \"{ROOT_DN}\"\n\
             rootpw {ROOT_PASSWORD}\n\
             directory {dir}/data\n\
             index objectClass,uid,member,uniqueMember,memberUid eq\n\
             access to attrs=userPassword by anonymous auth by * none\n\
             access to * by * read\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("slapd.conf"), config)?;
        let full =
            format!("dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n{ldif}");
        std::fs::write(dir.join("initial.ldif"), full)?;
        let status = Command::new("slapadd")
            .arg("-q")
            .arg("-f")
            .arg(dir.join("slapd.conf"))
            .arg("-l")
            .arg(dir.join("initial.ldif"))
            .status()
            .map_err(|e| io::Error::new(e.kind(), format!("slapadd (apt install slapd): {e}")))?;
        if !status.success() {
            return Err(io::Error::other(format!("slapadd failed ({status}) on {}", dir.display())));
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let tls_port = match tls {
            Some(_) => Some(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()),
            None => None,
        };
        let mut slapd = Self { dir, port, tls_port, child: None };
        slapd.restart()?;
        Ok(slapd)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn uri(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// The `ldaps://` URI (started with [`Slapd::start_with`] and a certificate).
    pub fn ldaps_uri(&self) -> Option<String> {
        self.tls_port.map(|port| format!("ldaps://127.0.0.1:{port}"))
    }

    /// Starts slapd (again) on its port, returning once it accepts connections: slapd says
    /// "slapd starting" on stderr when its listeners are open.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        let mut child = Command::new("slapd")
            .arg("-f")
            .arg(self.dir.join("slapd.conf"))
            .arg("-h")
            .arg(match self.tls_port {
                Some(tls) => format!("ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{tls}/", self.port),
                None => format!("ldap://127.0.0.1:{}/", self.port),
            })
            .arg("-d")
            .arg("32768")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("slapd (apt install slapd): {e}")))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("slapd starting") => break,
                Some(Ok(line)) => seen.push(line),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(io::Error::other(format!("slapd did not start:\n{}", seen.join("\n"))));
                }
            }
        }
        // Keep draining stderr so slapd never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        self.child = Some(child);
        Ok(())
    }

    /// Stops slapd (the directory becomes unreachable); [`Slapd::restart`] brings it back.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Applies LDIF change records (`changetype: add|modify|delete`) as the root account.
    pub fn modify(&self, ldif: &str) -> io::Result<()> {
        let mut child = Command::new("ldapmodify")
            .args(["-x", "-H", &self.uri(), "-D", ROOT_DN, "-w", ROOT_PASSWORD])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("ldapmodify (apt install ldap-utils): {e}")))?;
        child.stdin.take().expect("piped stdin").write_all(ldif.as_bytes())?;
        let output = child.wait_with_output()?;
        if !output.status.success() {
            return Err(io::Error::other(format!("ldapmodify failed: {}", String::from_utf8_lossy(&output.stderr))));
        }
        Ok(())
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
