//! Every scenario file under `fixtures/scenarios/` parses and validates, so a malformed
//! fixture fails `cargo test` instead of the first conformance run that meets it.

use std::path::Path;

#[test]
fn every_scenario_file_is_well_formed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/scenarios");
    let scenarios = match conformance::scenario::load_dir(&root) {
        Ok(scenarios) => scenarios,
        Err(errors) => {
            let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            panic!("malformed scenario files:\n{}", list.join("\n"));
        }
    };
    assert!(
        !scenarios.is_empty(),
        "no scenario under {}",
        root.display()
    );
}
