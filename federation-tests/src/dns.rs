//! A tiny authoritative DNS server on loopback UDP, for the SRV step of server discovery: it
//! answers the SRV and A records it is given, `NXDOMAIN` for names it does not know, and an
//! empty answer for other types of names it knows (AAAA of an IPv4-only target).

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
};

/// One SRV record: priority, weight, port, target host.
#[derive(Clone)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

#[derive(Default)]
struct Zone {
    srv: HashMap<String, Vec<Srv>>,
    a: HashMap<String, Ipv4Addr>,
}

/// The running server; it stops when dropped.
pub struct DnsServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const TYPE_A: u16 = 1;
const TYPE_SRV: u16 = 33;

impl DnsServer {
    /// Serves `srv` (name → records) and `a` (name → address); names without a trailing dot.
    pub async fn start(srv: &[(&str, Srv)], a: &[(&str, Ipv4Addr)]) -> DnsServer {
        let mut zone = Zone::default();
        for (name, record) in srv {
            zone.srv.entry(name.to_ascii_lowercase()).or_default().push(record.clone());
        }
        for (name, ip) in a {
            zone.a.insert(name.to_ascii_lowercase(), *ip);
        }
        let zone = Arc::new(zone);
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind a UDP port");
        let addr = socket.local_addr().expect("address");
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else { return };
                if let Some(answer) = answer(&zone, &buf[..n]) {
                    let _ = socket.send_to(&answer, peer).await;
                }
            }
        });
        DnsServer { addr, task }
    }
}

/// Reads the question's name (uncompressed, as queries are) and where it ends.
fn read_name(packet: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    loop {
        let len = *packet.get(at)? as usize;
        at += 1;
        if len == 0 {
            return Some((labels.join(".").to_ascii_lowercase(), at));
        }
        labels.push(String::from_utf8_lossy(packet.get(at..at + len)?).into_owned());
        at += len;
    }
}

fn write_name(out: &mut Vec<u8>, name: &str) {
    for label in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

fn answer(zone: &Zone, query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    let (name, end) = read_name(query, 12)?;
    let qtype = u16::from_be_bytes([*query.get(end)?, *query.get(end + 1)?]);
    let question = query.get(12..end + 4)?;
    let mut records: Vec<(u16, Vec<u8>)> = Vec::new();
    let known = zone.srv.contains_key(&name) || zone.a.contains_key(&name);
    match qtype {
        TYPE_SRV => {
            for srv in zone.srv.get(&name).into_iter().flatten() {
                let mut rdata = Vec::new();
                rdata.extend_from_slice(&srv.priority.to_be_bytes());
                rdata.extend_from_slice(&srv.weight.to_be_bytes());
                rdata.extend_from_slice(&srv.port.to_be_bytes());
                write_name(&mut rdata, &srv.target);
                records.push((TYPE_SRV, rdata));
            }
        }
        TYPE_A => {
            if let Some(ip) = zone.a.get(&name) {
                records.push((TYPE_A, ip.octets().to_vec()));
            }
        }
        _ => {}
    }
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&query[0..2]);
    // A response, authoritative, recursion desired and available; NXDOMAIN for unknown names.
    let rcode = if known { 0 } else { 3 };
    out.extend_from_slice(&(0x8580u16 | rcode).to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    for (kind, rdata) in records {
        out.extend_from_slice(&[0xC0, 0x0C]);
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&60u32.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    Some(out)
}
