//! `deploy/daemonset.yaml` runs the agent the README describes: Prometheus finds it on the
//! port it listens on, the pools file it reads is `deploy/pools.toml`, its image is the one
//! `cargo xtask image` builds (`POOLTRACE_IMAGE`), and pooltrace itself accepts its command
//! line. Read with a real YAML parser, as `kubectl` would read it.

use std::{fs, net::SocketAddr, path::Path};

use pooltrace_tests::{repo_file, run_pooltrace, Image};
use yaml_rust2::{Yaml, YamlLoader};

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The documents of the manifest that run the agent.
struct Manifest {
    daemonset: Yaml,
    configmap: Yaml,
}

impl Manifest {
    fn load() -> Self {
        let path = repo_file("deploy/daemonset.yaml");
        let documents = YamlLoader::load_from_str(&read(&path))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let only = |kind: &str| {
            let mut of_kind = documents
                .iter()
                .filter(|document| document["kind"].as_str() == Some(kind));
            let document = of_kind
                .next()
                .unwrap_or_else(|| panic!("{} has no {kind}", path.display()));
            assert!(
                of_kind.next().is_none(),
                "{} has two {kind}s",
                path.display()
            );
            document.clone()
        };
        Self {
            daemonset: only("DaemonSet"),
            configmap: only("ConfigMap"),
        }
    }

    /// The pod template: its `metadata` and `spec`.
    fn pod(&self) -> &Yaml {
        &self.daemonset["spec"]["template"]
    }

    /// The pod's one container, the agent.
    fn agent(&self) -> &Yaml {
        let containers = self.pod()["spec"]["containers"]
            .as_vec()
            .expect("the pod has a list of containers");
        assert_eq!(containers.len(), 1, "the pod runs the agent alone");
        &containers[0]
    }

    /// The agent's command line, `command` then `args`, so either may hold `agent`.
    fn argv(&self) -> Vec<String> {
        let agent = self.agent();
        let strings = |key: &str| -> Vec<String> {
            let items = agent[key].as_vec().map_or(&[][..], Vec::as_slice);
            items
                .iter()
                .map(|item| match item.as_str() {
                    Some(text) => text.to_owned(),
                    None => panic!("{key}: {item:?} is not a string"),
                })
                .collect()
        };
        let argv = [strings("command"), strings("args")].concat();
        assert_eq!(argv[..2], ["pooltrace", "agent"], "{argv:?}");
        argv
    }
}

/// The value given to `flag`, which must be given once.
fn option<'a>(argv: &'a [String], flag: &str) -> &'a str {
    let at: Vec<usize> = (0..argv.len()).filter(|&i| argv[i] == flag).collect();
    assert_eq!(at.len(), 1, "{flag} is given once: {argv:?}");
    argv.get(at[0] + 1)
        .unwrap_or_else(|| panic!("{flag} has no value: {argv:?}"))
}

/// The item of the list `list` whose `key` is `value`.
fn item<'a>(list: &'a Yaml, key: &str, value: &str) -> &'a Yaml {
    list.as_vec()
        .and_then(|items| items.iter().find(|i| i[key].as_str() == Some(value)))
        .unwrap_or_else(|| panic!("no item with {key}: {value} in {list:?}"))
}

#[test]
fn the_agent_sees_every_process_of_its_node() {
    assert_eq!(
        Manifest::load().pod()["spec"]["hostPID"],
        Yaml::Boolean(true),
        "without the node's PID namespace, --exe sees only the agent's own container"
    );
}

#[test]
fn prometheus_finds_the_agent_on_the_port_it_listens_on() {
    let manifest = Manifest::load();
    let pod = manifest.pod();
    let argv = manifest.argv();
    let listen: SocketAddr = option(&argv, "--listen")
        .parse()
        .expect("--listen is an address");
    assert!(
        listen.ip().is_unspecified(),
        "Prometheus scrapes the pod's address, not its loopback: {listen}"
    );
    let port = item(&manifest.agent()["ports"], "name", "metrics");
    assert_eq!(
        port["containerPort"].as_i64(),
        Some(i64::from(listen.port()))
    );
    let annotations = &pod["metadata"]["annotations"];
    let annotation = |name: &str| annotations[name].as_str();
    assert_eq!(annotation("prometheus.io/scrape"), Some("true"));
    assert_eq!(
        annotation("prometheus.io/port"),
        Some(listen.port().to_string().as_str())
    );
    assert_eq!(annotation("prometheus.io/path"), Some("/metrics"));
}

#[test]
fn the_pools_file_the_agent_reads_is_deploy_pools_toml() {
    let manifest = Manifest::load();
    let argv = manifest.argv();
    let pools_file = Path::new(option(&argv, "--pools-file"));
    let (dir, name) = (
        pools_file.parent().expect("--pools-file is in a directory"),
        pools_file
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a file name"),
    );
    // The directory is a volume mounted from the ConfigMap, whose key is the file's name.
    let mounts = &manifest.agent()["volumeMounts"];
    let mount = item(mounts, "mountPath", dir.to_str().expect("a UTF-8 path"));
    let volume_name = mount["name"].as_str().expect("the mount names a volume");
    let volume = item(&manifest.pod()["spec"]["volumes"], "name", volume_name);
    let metadata =
        |document: &Yaml, key: &str| document["metadata"][key].as_str().map(str::to_owned);
    assert_eq!(
        volume["configMap"]["name"].as_str().map(str::to_owned),
        metadata(&manifest.configmap, "name")
    );
    assert_eq!(
        metadata(&manifest.configmap, "namespace"),
        metadata(&manifest.daemonset, "namespace")
    );
    let embedded = manifest.configmap["data"][name]
        .as_str()
        .unwrap_or_else(|| panic!("the ConfigMap has no {name}"));
    assert_eq!(
        embedded,
        read(&repo_file("deploy/pools.toml")),
        "the ConfigMap's {name} and deploy/pools.toml differ"
    );
}

#[test]
fn pooltrace_accepts_the_daemonsets_command_line() {
    let argv = Manifest::load().argv();
    let pools_file = option(&argv, "--pools-file").to_owned();
    let here = repo_file("deploy/pools.toml");
    let mut args: Vec<&str> = argv[1..]
        .iter()
        .map(|arg| match *arg == pools_file {
            true => here.to_str().expect("a UTF-8 path"),
            false => arg.as_str(),
        })
        .collect();
    args.push("--dry-run");
    let output = run_pooltrace(&args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{args:?}: {stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some("pooltrace agent --dry-run: would serve http://0.0.0.0:9464/metrics")
    );
    assert_eq!(
        lines.next(),
        Some("  pools: preset thanos; preset prometheus")
    );
}

#[test]
fn the_daemonset_runs_the_image_xtask_builds() {
    let manifest = Manifest::load();
    let image = Image::built();
    let name = manifest.agent()["image"]
        .as_str()
        .expect("the agent names its image");
    // A registry's repository `pooltrace`, at the version xtask tags.
    let (repository, tag) = name.rsplit_once(':').expect("a tagged image");
    assert_eq!(tag, image.tag, "{name}");
    let (registry, last) = repository
        .rsplit_once('/')
        .expect("the image is in a registry");
    assert_eq!(last, "pooltrace", "{name}");
    assert!(
        !registry.is_empty() && repository == repository.to_lowercase(),
        "{name} is not a valid image reference"
    );
    // The runtime looks `command` up on the image's PATH: it must find the entrypoint.
    let config = image.config();
    let entrypoint = config["config"]["Entrypoint"][0]
        .as_str()
        .expect("entrypoint");
    let path = config["config"]["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|variable| variable.as_str()?.strip_prefix("PATH="))
        .expect("the image sets PATH");
    let command = &manifest.argv()[0];
    assert!(
        path.split(':')
            .any(|dir| Path::new(dir).join(command) == Path::new(entrypoint)),
        "{command} is not {entrypoint} on PATH={path}"
    );
}
