//! A TCP relay on a free loopback port towards a node's federation port, which can be cut: open
//! connections are closed and new ones closed as they come, as a firewall that drops the pair's
//! traffic would make them fail. A connection that comes before the node's port is known (the
//! nodes start together) waits for it. Pointed to by a node's own DNS server (the SRV of
//! another node's name), it carries one direction of one pair of nodes.

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

pub struct Relay {
    pub port: u16,
    target: watch::Sender<Option<u16>>,
    cut: watch::Sender<bool>,
    /// Connections closed because the relay was cut, since it started.
    refused: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a relay port");
        let port = listener.local_addr().expect("the relay's address").port();
        let (target, target_seen) = watch::channel(None::<u16>);
        let (cut, cut_seen) = watch::channel(false);
        let (refused_count, refused) = watch::channel(0u64);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                let mut cut_seen = cut_seen.clone();
                if *cut_seen.borrow() {
                    drop(inbound);
                    refused_count.send_modify(|n| *n += 1);
                    continue;
                }
                let mut target_seen = target_seen.clone();
                tokio::spawn(async move {
                    let Ok(port) = target_seen.wait_for(Option::is_some).await.map(|port| port.unwrap_or(0)) else {
                        return;
                    };
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", port)).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_seen.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Relay { port, target, cut, refused, task }
    }

    pub fn set_target(&self, port: u16) {
        self.target.send_replace(Some(port));
    }

    pub fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }

    /// How many connections the relay closed because it was cut.
    pub fn refused(&self) -> u64 {
        *self.refused.borrow()
    }

    /// Waits until the relay has closed more than `seen` connections because it was cut (someone
    /// tried to go through), at most `timeout`.
    pub async fn wait_refused_more_than(&self, seen: u64, timeout: std::time::Duration) {
        let mut refused = self.refused.clone();
        let waited = tokio::time::timeout(timeout, refused.wait_for(|n| *n > seen)).await;
        assert!(matches!(waited, Ok(Ok(_))), "nobody tried to go through the cut relay within {timeout:?}");
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
