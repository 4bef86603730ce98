//! The container image `cargo xtask image` builds (`POOLTRACE_IMAGE`) is what the top-level
//! Containerfile says: pooltrace alone, as its entrypoint. Run by podman as the DaemonSet
//! runs it (with only the capabilities it adds, in the host's PID namespace), with the
//! image's files for its whole root filesystem, it attaches to a fixture running outside the
//! container, whose binary it reaches only through /proc/PID/exe, and counts its pool
//! exactly (tests/counts.rs's fixture and expectations).

use std::{
    collections::BTreeMap,
    fs,
    path::PathBuf,
    process::{Command, Stdio},
};

use pooltrace_tests::{assert_pointer_pool_exact, repo_file, Image, Tracer, Value};

fn env_path(name: &str) -> PathBuf {
    std::env::var_os(name)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{name} is not set: run the tests with `cargo xtask test`"))
}

/// podman (`POOLTRACE_PODMAN`) with its own storage, in a directory removed afterwards, so
/// the tests leave nothing in the machine's container store. It runs containers with runc
/// (`POOLTRACE_RUNC`): crun refuses machines whose cgroup v2 hierarchy holds a controller
/// while v1's are mounted, as the test machines' does.
struct Podman {
    dir: PathBuf,
}

impl Podman {
    /// A podman of its own for the test `name`: tests run at once.
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("pooltrace-podman-{}-{name}", std::process::id()));
        fs::create_dir_all(&dir).expect("podman's directory");
        Self { dir }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(env_path("POOLTRACE_PODMAN"));
        command
            .arg("--root")
            .arg(self.dir.join("storage"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .arg("--runtime")
            .arg(env_path("POOLTRACE_RUNC"))
            // Plain copies of a 7 MB image: no overlay mounts to undo.
            .args(["--storage-driver", "vfs"])
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "none"]);
        command
    }

    /// Copies the image from its OCI layout into this podman's store; returns its id.
    fn pull(&self, image: &Image) -> String {
        let output = self
            .command()
            .args(["pull", "--quiet", &image.reference()])
            .stderr(Stdio::inherit())
            .output()
            .expect("run podman pull");
        assert!(output.status.success(), "podman pull failed");
        let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert!(!id.is_empty(), "podman pull printed no image id");
        id
    }

    /// `podman run` of image `id` as the DaemonSet runs it, up to the image's entrypoint:
    /// what follows is pooltrace's command line.
    fn run(&self, id: &str, options: &[&str]) -> Command {
        let (_, seccomp) = daemonset_security();
        self.run_confined(id, Some(seccomp), options)
    }

    /// The same with seccomp profile `seccomp` (podman's own default when None).
    fn run_confined(&self, id: &str, seccomp: Option<&str>, options: &[&str]) -> Command {
        let mut command = self.command();
        let (capabilities, _) = daemonset_security();
        command
            .args(["run", "--rm", "--cap-drop", "all"])
            .args(["--cap-add", &capabilities.join(",")]);
        if let Some(seccomp) = seccomp {
            command.args(["--security-opt", &format!("seccomp={seccomp}")]);
        }
        command
            .args(["--pid", "host", "--network", "none"])
            .args(limits())
            .args(options)
            .arg(id);
        command
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // A test that failed may have left its container running (podman killed, conmon on).
        let _ = self
            .command()
            .args(["rm", "--force", "--all", "--time", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The capabilities deploy/daemonset.yaml adds to the agent's container (it drops all),
/// and its seccomp profile, as podman names it.
fn daemonset_security() -> (Vec<String>, &'static str) {
    let manifest = fs::read_to_string(repo_file("deploy/daemonset.yaml")).expect("the manifest");
    let documents = yaml_rust2::YamlLoader::load_from_str(&manifest).expect("YAML");
    let daemonset = (documents.iter())
        .find(|d| d["kind"].as_str() == Some("DaemonSet"))
        .expect("a DaemonSet");
    let context = &daemonset["spec"]["template"]["spec"]["containers"][0]["securityContext"];
    let names = |key: &str| -> Vec<String> {
        let listed = context["capabilities"][key].as_vec();
        (listed.map_or(&[][..], Vec::as_slice).iter())
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(
        names("drop"),
        ["ALL"],
        "the DaemonSet drops every capability"
    );
    let seccomp = match context["seccompProfile"]["type"].as_str() {
        Some("Unconfined") => "unconfined",
        other => panic!("a seccomp profile podman cannot stand for: {other:?}"),
    };
    (names("add"), seccomp)
}

/// The container's resource limits. podman's defaults are refused on the test machines:
/// without CAP_SYS_RESOURCE, runc's setrlimit fails with EPERM above the limits podman runs
/// under itself (the test's own open-file limit; 32768 processes, measured). These are
/// within them.
fn limits() -> Vec<String> {
    let mut files = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut files) };
    assert_eq!(read, 0, "getrlimit");
    let files = files.rlim_max.min(1 << 20);
    vec![
        "--ulimit".to_owned(),
        format!("nofile={files}:{files}"),
        "--ulimit".to_owned(),
        "nproc=4096:4096".to_owned(),
    ]
}

#[test]
fn pooltrace_in_the_image_counts_a_process_outside_it_exactly() {
    let image = Image::built();
    let podman = Podman::new("counts");
    let id = podman.pull(&image);
    assert_pointer_pool_exact("poolfix-go1.27", |pid, args| {
        Tracer::attach_with(podman.run(&id, &[]), pid, args)
    });
}

/// Why the DaemonSet says `seccompProfile: Unconfined`: under podman's default profile,
/// bpf(2) is refused whatever the capabilities, and pooltrace says so in one line.
#[test]
fn under_the_runtimes_default_seccomp_profile_the_refusal_is_named() {
    let image = Image::built();
    let podman = Podman::new("seccomp");
    let id = podman.pull(&image);
    let target = pooltrace_tests::Target::start(&pooltrace_tests::fixture("poolfix-go1.27"));
    let output = podman
        .run_confined(&id, None, &[])
        .args(["report", "--pid", &target.pid.to_string()])
        .args(pooltrace_tests::POOLFIX_BUFS)
        .output()
        .expect("run podman");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    // The map named is whichever aya creates first.
    let refused = "pooltrace: error: cannot load the eBPF object: bpf(2) was refused although \
                   pooltrace has CAP_BPF and CAP_PERFMON; a seccomp or LSM profile (a container \
                   runtime's default) may forbid it: map error: failed to create map `";
    assert!(
        matches!(lines[..], [line] if line.starts_with(refused)
            && line.ends_with("`: Operation not permitted")),
        "{stderr}"
    );
}

#[test]
fn the_image_holds_nothing_but_pooltrace_and_runs_it_by_name() {
    let image = Image::built();
    let layers = image.manifest()["layers"]
        .as_array()
        .expect("layers")
        .clone();
    assert_eq!(layers.len(), 1, "{layers:?}");
    let listing = Command::new("tar")
        .arg("--list")
        .arg("--gzip")
        .arg("--file")
        .arg(image.blob(&layers[0]))
        .output()
        .expect("run tar");
    assert!(listing.status.success(), "tar cannot read the layer");
    assert_eq!(
        String::from_utf8_lossy(&listing.stdout)
            .lines()
            .collect::<Vec<_>>(),
        [
            ".",
            "usr/",
            "usr/local/",
            "usr/local/bin/",
            "usr/local/bin/pooltrace"
        ]
    );
    // `command: [pooltrace]`, as deploy/daemonset.yaml gives it, is found on the image's
    // PATH; and with no shell or libc in the image, the binary runs.
    let podman = Podman::new("files");
    let id = podman.pull(&image);
    let output = podman
        .run(&id, &["--entrypoint", "pooltrace"])
        .arg("--version")
        .output()
        .expect("run podman");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("pooltrace {}\n", image.tag)
    );
    let shell = podman
        .run(&id, &["--entrypoint", "/bin/sh"])
        .args(["-c", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run podman");
    assert!(!shell.success(), "the image has a shell");
}

/// The Containerfile's instructions: `ARG`s with their defaults, `LABEL`s with `${ARG}`
/// replaced by defaults (left out when the ARG has none), and the others by name.
struct Containerfile {
    copy: Vec<String>,
    env: Vec<String>,
    user: String,
    entrypoint: Value,
    labels: BTreeMap<String, Option<String>>,
}

impl Containerfile {
    fn read() -> Self {
        let path = repo_file("Containerfile");
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut file = Self {
            copy: Vec::new(),
            env: Vec::new(),
            user: String::new(),
            entrypoint: Value::Null,
            labels: BTreeMap::new(),
        };
        let mut args: BTreeMap<String, Option<String>> = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (instruction, rest) = line.split_once(' ').unwrap_or((line, ""));
            match instruction {
                "FROM" => assert_eq!(rest, "scratch", "the image is built on nothing"),
                "ARG" => {
                    let (name, default) = match rest.split_once('=') {
                        Some((name, default)) => (name, Some(default.to_owned())),
                        None => (rest, None),
                    };
                    args.insert(name.to_owned(), default);
                }
                "COPY" => file.copy = rest.split(' ').map(str::to_owned).collect(),
                "ENV" => file.env.push(rest.to_owned()),
                "USER" => file.user = rest.to_owned(),
                "ENTRYPOINT" => file.entrypoint = serde_json::from_str(rest).expect("JSON"),
                "LABEL" => {
                    let (key, value) = rest.split_once('=').expect("LABEL key=value");
                    let mut value = Some(value.trim_matches('"').to_owned());
                    for (name, default) in &args {
                        let reference = format!("${{{name}}}");
                        if value.as_ref().is_some_and(|v| v.contains(&reference)) {
                            value = default
                                .as_ref()
                                .and_then(|d| value.map(|v| v.replace(&reference, d)));
                        }
                    }
                    file.labels.insert(key.to_owned(), value);
                }
                other => panic!("{}: unexpected {other}", path.display()),
            }
        }
        file
    }
}

#[test]
fn the_containerfile_describes_the_image() {
    let containerfile = Containerfile::read();
    let config = Image::built().config();
    let config = &config["config"];
    assert_eq!(config["Entrypoint"], containerfile.entrypoint);
    assert_eq!(config["User"], containerfile.user.as_str());
    assert_eq!(config["Env"], serde_json::json!(containerfile.env));
    // It copies the binary xtask builds to where the entrypoint runs it from.
    let [from, to] = &containerfile.copy[..] else {
        panic!("COPY {:?}", containerfile.copy)
    };
    assert!(repo_file(from).is_file(), "{from} is not built");
    assert_eq!(config["Entrypoint"][0], to.as_str());
    let labels = config["Labels"].as_object().expect("labels");
    assert_eq!(
        labels.keys().collect::<Vec<_>>(),
        containerfile.labels.keys().collect::<Vec<_>>()
    );
    for (key, value) in &containerfile.labels {
        match value {
            Some(value) => assert_eq!(labels[key], value.as_str(), "{key}"),
            None => assert!(labels[key].as_str().is_some_and(|v| !v.is_empty()), "{key}"),
        }
    }
}
