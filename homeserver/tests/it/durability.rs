//! Durability under a simulated power cut. A process kill alone proves little: the kernel's page
//! cache outlives the process, so writes that were never synced survive it. Here the database
//! lives on an ext4 filesystem in a loop device (journal commits every 300 s, so the kernel
//! writes nothing back by itself during the test); after `kill -9` the disk image is copied as
//! the disk holds it — without the unsynced pages a power cut loses — and a server started on
//! the copy must hold every write it acknowledged. The same run with fsyncs switched off
//! (`FAULT_HEMICYCLE_SKIP_FSYNC`) loses them, which shows the test can fail.
//!
//! Needs root (mount) and loop devices, as CI has.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::common::TestServer;

const MESSAGES: usize = 20;

/// An ext4 filesystem in an image file, mounted through a loop device.
struct LoopDisk {
    _dir: TempDir,
    image: PathBuf,
    mount: PathBuf,
    mounted: bool,
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl LoopDisk {
    fn create() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        run("truncate", &["-s", "512M", image.to_str().unwrap()]);
        run("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]);
        Self::mount(dir, image)
    }

    fn mount(dir: TempDir, image: PathBuf) -> Self {
        let mount = dir.path().join("mnt");
        std::fs::create_dir_all(&mount).unwrap();
        run("mount", &["-o", "loop,commit=300", image.to_str().unwrap(), mount.to_str().unwrap()]);
        Self { _dir: dir, image, mount, mounted: true }
    }

    /// The disk as a power cut leaves it: the image's bytes now, unsynced page cache excluded.
    fn crash_copy(&mut self) -> LoopDisk {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("crashed.img");
        run("cp", &["--sparse=always", self.image.to_str().unwrap(), copy.to_str().unwrap()]);
        self.unmount();
        Self::mount(dir, copy)
    }

    fn unmount(&mut self) {
        if self.mounted {
            run("umount", &[self.mount.to_str().unwrap()]);
            self.mounted = false;
        }
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        }
    }
}

async fn call(
    http: &reqwest::Client,
    url: &str,
    method: reqwest::Method,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

/// Writes an account, a room and [`MESSAGES`] messages (each acknowledged), kills the server,
/// "cuts the power", and returns how many of the acknowledged messages a server on the crashed
/// disk still has (`None`: the account itself was lost).
async fn acknowledged_then_power_cut(skip_fsync: bool) -> Option<usize> {
    let mut disk = LoopDisk::create();
    let db = disk.mount.join("db").to_string_lossy().into_owned();
    let env: &[(&str, &str)] = if skip_fsync { &[("FAULT_HEMICYCLE_SKIP_FSYNC", "1")] } else { &[] };
    let mut server = TestServer::start_with_env(&[("database.path", db.into())], env);
    let http = server.http();
    let base = format!("{}/_matrix/client/v3", server.url);
    let register = format!("{base}/register");
    let (_, first) =
        call(&http, &register, reqwest::Method::POST, None, Some(json!({ "username": "alice", "password": "pw" })))
            .await;
    let body = json!({ "username": "alice", "password": "pw", "auth": { "type": "m.login.dummy", "session": first["session"] } });
    let (status, done) = call(&http, &register, reqwest::Method::POST, None, Some(body)).await;
    assert_eq!(status, 200, "{done}");
    let token = done["access_token"].as_str().unwrap().to_owned();
    let (status, room) =
        call(&http, &format!("{base}/createRoom"), reqwest::Method::POST, Some(&token), Some(json!({}))).await;
    assert_eq!(status, 200, "{room}");
    let room = room["room_id"].as_str().unwrap().to_owned();
    for n in 0..MESSAGES {
        let url = format!("{base}/rooms/{room}/send/m.room.message/t{n}");
        let (status, sent) = call(
            &http,
            &url,
            reqwest::Method::PUT,
            Some(&token),
            Some(json!({ "msgtype": "m.text", "body": format!("m{n}") })),
        )
        .await;
        assert_eq!(status, 200, "{sent}");
    }
    server.kill();
    let crashed = disk.crash_copy();

    let db = crashed.mount.join("db").to_string_lossy().into_owned();
    let server = TestServer::start_with(&[("database.path", db.into())]);
    let base = format!("{}/_matrix/client/v3", server.url);
    let (status, _) = call(&http, &format!("{base}/account/whoami"), reqwest::Method::GET, Some(&token), None).await;
    if status != 200 {
        return None;
    }
    let url = format!("{base}/rooms/{room}/messages?dir=b&limit=100");
    let (status, page) = call(&http, &url, reqwest::Method::GET, Some(&token), None).await;
    if status != 200 {
        return Some(0);
    }
    let kept = page["chunk"].as_array().unwrap().iter().filter(|e| e["type"] == "m.room.message").count();
    Some(kept)
}

fn have_loop_devices() -> bool {
    Path::new("/dev/loop-control").exists()
}

#[tokio::test]
async fn acknowledged_writes_survive_a_power_cut() {
    assert!(have_loop_devices(), "this test needs loop devices (and root to mount them)");
    assert_eq!(acknowledged_then_power_cut(false).await, Some(MESSAGES), "every acknowledged message is on disk");
}

#[tokio::test]
async fn without_fsync_a_power_cut_loses_acknowledged_writes() {
    assert!(have_loop_devices(), "this test needs loop devices (and root to mount them)");
    let kept = acknowledged_then_power_cut(true).await;
    assert_ne!(kept, Some(MESSAGES), "the power-cut simulation must lose unsynced writes, or it proves nothing");
}
