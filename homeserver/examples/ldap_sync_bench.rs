//! Measures the LDAP directory sync at ministry scale: a real `slapd` holding N people (default
//! 10,000; at most 1,000 returned per page, as Active Directory does);
//! the homeserver's services opened on a fresh database; then `ldap sync` runs the real
//! code twice: the first run creates every account, the second finds nothing to do.
//!
//! `cargo run --release -p hemicycle --example ldap_sync_bench -- [N]` (needs `slapd`, `ldap-utils`).

use std::{sync::Arc, time::Instant};

use hemicycle::{config::Config, services::Services};
use hemicycle_bridges::testing::{Slapd, BASE};

#[tokio::main]
async fn main() {
    let count: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let mut ldif = format!(
        "dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: cn=reader,{BASE}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: reader\n\
         userPassword: reader-secret\n\n"
    );
    for i in 0..count {
        ldif.push_str(&format!(
            "dn: uid=agent{i},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: agent{i}\n\
             cn: Agent Numéro {i}\nsn: Numéro {i}\nmail: agent{i}@example.gouv.fr\nuserPassword: pw{i}\n\n"
        ));
    }
    let started = Instant::now();
    let slapd = Slapd::start(&ldif, 1000).expect("slapd");
    println!("directory of {count} entries loaded in {:.2} s", started.elapsed().as_secs_f64());

    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("bind-password");
    std::fs::write(&secret, "reader-secret").unwrap();
    let toml = format!(
        "server_name = \"bench.example\"\n\
         [database]\npath = \"{db}\"\n\
         [ldap]\nenabled = true\nuri = \"{uri}\"\nbase = \"ou=people,{BASE}\"\n\
         bind_dn = \"cn=reader,{BASE}\"\nbind_password_file = \"{secret}\"\n\
         filter = \"(objectClass=inetOrgPerson)\"\npage_size = 1000\ntimeout_ms = 30000\n\
         allow_insecure = true\n",
        db = dir.path().join("db").display(),
        uri = slapd.uri(),
        secret = secret.display(),
    );
    let path = dir.path().join("homeserver.toml");
    std::fs::write(&path, toml).unwrap();
    let config = Config::load(Some(&path)).expect("config");
    let services: Arc<Services> = Services::open(config).expect("services");

    for run in ["first sync (creates every account)", "second sync (nothing to do)"] {
        let started = Instant::now();
        let summary = hemicycle::users::directory::sync(&services, false).await.expect("sync");
        let elapsed = started.elapsed().as_secs_f64();
        println!("{run}: {elapsed:.2} s, {:.0} entries/s", count as f64 / elapsed);
        print!("  {summary}");
    }
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM")).map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_owned())
        })
        .unwrap_or_default();
    println!("peak RSS: {} MB", rss.parse::<u64>().map(|kb| kb / 1024).unwrap_or(0));
}
