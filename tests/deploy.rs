//! The deployment files in `deploy/`: every systemd unit passes `systemd-analyze verify`
//! (no systemd needs to run; the unit's `ExecStart` is pointed at the built binary, since
//! verify checks that it is executable), and every example configuration is one the binary
//! accepts for its role.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::BIN;

fn deploy(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    files.sort();
    files
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("systemd-analyze (Debian's systemd package; scripts/services installs it)");
    let units = deploy("systemd");
    assert_eq!(
        units.len(),
        3,
        "api, scheduler and the streamer template: {units:?}"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let mut checked = Vec::new();
    for unit in &units {
        let text = std::fs::read_to_string(unit).expect("read the unit");
        assert!(
            text.contains("ExecStart=/usr/local/bin/slotcast server "),
            "{}: starts a slotcast role",
            unit.display()
        );
        let name = unit.file_name().unwrap().to_string_lossy().into_owned();
        // A template is verified as one of its instances.
        let name = name.replace("@.service", "@srv-1.service");
        let path = dir.path().join(&name);
        std::fs::write(&path, text.replace("/usr/local/bin/slotcast", BIN)).expect("write");
        checked.push(path);
    }
    let out = Command::new(analyze)
        .arg("verify")
        .args(&checked)
        .output()
        .expect("run systemd-analyze");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {}\n{said}",
        out.status
    );
}

#[test]
fn every_example_configuration_is_accepted_by_its_role() {
    let configs = deploy("config");
    assert_eq!(configs.len(), 3, "api, scheduler, streamer: {configs:?}");
    for config in configs {
        let role = config.file_stem().unwrap().to_string_lossy().into_owned();
        let out = Command::new(BIN)
            .args([
                "--config",
                config.to_str().unwrap(),
                "server",
                &role,
                "--check",
            ])
            .env("SLOTCAST_SERVER_ID", "srv-1")
            .env("SLOTCAST_LOG", "error")
            .output()
            .expect("run slotcast");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{}: {}\n{said}",
            config.display(),
            out.status
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&format!(
                "slotcast server {role}: the configuration is valid"
            )),
            "{}: {said}",
            config.display()
        );
    }
}

#[test]
fn a_configuration_with_a_mistake_is_refused_by_the_check_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("api.toml");
    std::fs::write(&path, "[api]\nadress = \"0.0.0.0:8080\"\n").expect("write");
    let out = Command::new(BIN)
        .args([
            "--config",
            path.to_str().unwrap(),
            "server",
            "api",
            "--check",
        ])
        .env("SLOTCAST_LOG", "error")
        .output()
        .expect("run slotcast");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("adress"), "names the unknown key: {said}");
}
