//! Start-up of the `hemicycle-workspace` binary: a bad configuration or registration file stops
//! it with exit code 1 and a message naming the file and the field. (Its behaviour with a real
//! homeserver is tested in federation-tests/tests/workspace.rs, which runs this binary.)

use std::process::Command;

fn run(config: &str, registration: Option<&str>) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("workspace.yaml");
    if let Some(text) = registration {
        std::fs::write(&reg, text).unwrap();
    }
    let path = dir.path().join("workspace.toml");
    let config = config
        .replace("REG", &reg.display().to_string())
        .replace("DATA", &dir.path().join("data").display().to_string());
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hemicycle-workspace")).arg("--config").arg(&path).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

const GOOD: &str =
    "homeserver_url = \"http://127.0.0.1:9\"\nserver_name = \"example.gouv.fr\"\nregistration = \"REG\"\n\
                    listen = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1\"\ndata_dir = \"DATA\"\n";
const REGISTRATION: &str =
    "id: workspace\nas_token: a\nhs_token: h\nsender_localpart: workspace\nurl: http://127.0.0.1:1\nnamespaces: {}\n";

#[test]
fn a_bad_config_stops_start_up_naming_the_file_and_the_field() {
    let (code, err) = run(&GOOD.replace("server_name = \"example.gouv.fr\"\n", ""), Some(REGISTRATION));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("workspace.toml") && err.contains("server_name"), "{err}");

    let (code, err) = run(&format!("{GOOD}time_zone = \"Europe/Lutece\"\n"), Some(REGISTRATION));
    assert_eq!(code, 1);
    assert!(err.contains("time_zone") && err.contains("Europe/Lutece"), "{err}");

    let (code, err) = run(&format!("{GOOD}language = \"de\"\n"), Some(REGISTRATION));
    assert_eq!(code, 1);
    assert!(err.contains("language"), "{err}");

    let (code, err) = run(&format!("{GOOD}colour = \"blue\"\n"), Some(REGISTRATION));
    assert_eq!(code, 1);
    assert!(err.contains("colour"), "unknown keys are refused: {err}");

    let (code, err) = run(GOOD, Some(&REGISTRATION.replace("as_token: a\n", "")));
    assert_eq!(code, 1);
    assert!(err.contains("workspace.yaml") && err.contains("as_token"), "{err}");

    let (code, err) = run(GOOD, None);
    assert_eq!(code, 1);
    assert!(err.contains("workspace.yaml"), "a missing registration file is named: {err}");
}
