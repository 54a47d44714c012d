//! The deployment files, checked the way CI can without a cluster or a
//! container registry:
//!
//! - `deploy/Dockerfile` passes hadolint, builds with the toolchain
//!   Cargo.toml declares, its build context (after `.dockerignore`) holds
//!   everything cargo needs, and its HEALTHCHECK runs `jwtgate health`;
//! - every kustomize overlay builds (`kubectl kustomize`) and validates
//!   against the Kubernetes schemas offline (`kubernetes-validate --strict`),
//!   puts everything in its own namespace, and its Deployment keeps the pod
//!   contract (non-root, read-only root, no capabilities, probes on the
//!   admin listener, an emptyDir for the key cache, a termination grace
//!   period longer than the drain); production shares state through Redis;
//! - checkov finds nothing in the overlays and the Dockerfile but the
//!   checks skipped on purpose, each with its reason, offline;
//! - each overlay's `gateway.yaml` passes `jwtgate check` in the filesystem
//!   its pod sees, with the Deployment's own environment, and the demo's on
//!   a laptop with `--root`;
//! - the demo pod's runtime contract, as a process: jwtgate as the
//!   Deployment's user, without capabilities, on a read-only view of the
//!   whole filesystem in which only the emptyDir is writable; its probes
//!   and the image's HEALTHCHECK; its config updated by a `..data` symlink
//!   swap, as the kubelet updates a ConfigMap, and reloaded without a
//!   restart; SIGTERM draining.
//!
//! The pod's filesystem is built in a private mount namespace (`unshare`, as
//! root): each ConfigMap and Secret volume is written in the kubelet's layout
//! and bind-mounted at its `mountPath`, the binary where the Dockerfile puts
//! it, then every mount but `/proc`, `/sys` and the emptyDirs is made
//! read-only; `setpriv` switches to the pod's user, group and fsGroup. What
//! it does not reproduce: the seccomp profile, and the container's own
//! network namespace (listen addresses are moved to loopback ports).
//!
//! hadolint, kubectl, kubernetes-validate and checkov come from the tools virtualenv, which
//! `scripts/setup` fills (scripts/test calls it); a missing tool fails.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jwtgate::config::schema::GatewayConfig;
use jwtgate::jose::Algorithm;
use serde_json::{Value, json};

/// A bound on waits for things that take moments on an idle machine.
const PATIENCE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

/// The overlays every test builds.
const OVERLAYS: [&str; 2] = ["demo", "production"];

/// The oldest Kubernetes release the manifests are checked against, beside
/// kubernetes-validate's newest.
const OLDEST_KUBERNETES: &str = "1.30.0";

/// Where the Dockerfile installs the binary (checked against it below).
const IMAGE_BINARY: &str = "/usr/local/bin/jwtgate";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A tool scripts/setup installs into the tools virtualenv.
fn tool(name: &str) -> PathBuf {
    let path = common::venv_bin(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/test (or scripts/setup with the pip: arguments scripts/test gives it) first",
        path.display()
    );
    path
}

/// Runs `command`, panics with its output unless it succeeds, returns stdout.
fn output(command: &mut Command) -> String {
    let result = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let stdout = String::from_utf8_lossy(&result.stdout).into_owned();
    assert!(
        result.status.success(),
        "{command:?} failed ({}):\n{stdout}{}",
        result.status,
        String::from_utf8_lossy(&result.stderr)
    );
    stdout
}

fn must_be_root() {
    let uid = output(Command::new("id").arg("-u"));
    assert_eq!(
        uid.trim(),
        "0",
        "the pod tests build a mount namespace and switch users: run them as root (CI does)"
    );
}

// ---------------------------------------------------------------------------
// The image
// ---------------------------------------------------------------------------

fn dockerfile() -> String {
    fs::read_to_string(repo().join("deploy/Dockerfile")).expect("deploy/Dockerfile")
}

/// The image's HEALTHCHECK command, in exec form: the program and its
/// arguments.
fn healthcheck() -> Vec<String> {
    let joined = dockerfile().replace("\\\n", " ");
    let line = joined
        .lines()
        .find(|line| line.starts_with("HEALTHCHECK "))
        .expect("the Dockerfile has a HEALTHCHECK");
    let (_, command) = line
        .split_once(" CMD ")
        .unwrap_or_else(|| panic!("HEALTHCHECK without CMD: {line}"));
    let command: Vec<String> = serde_json::from_str(command.trim())
        .unwrap_or_else(|e| panic!("HEALTHCHECK CMD is not in exec form ({e}): {line}"));
    command
}

/// Distroless has no shell: the HEALTHCHECK runs the binary where the image
/// puts it, in exec form. What it does in a pod is asserted in
/// `the_demo_pod_runs_reloads_and_drains_as_its_manifest_says`.
#[test]
fn dockerfile_healthcheck_runs_the_binarys_health_command() {
    assert_eq!(healthcheck(), [IMAGE_BINARY, "health"]);
}

#[test]
fn dockerfile_passes_hadolint() {
    output(
        Command::new(tool("hadolint"))
            .args(["--failure-threshold", "info"])
            .arg(repo().join("deploy/Dockerfile")),
    );
}

#[test]
fn dockerfile_builds_with_the_toolchain_cargo_toml_declares() {
    let manifest = fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    let declared = manifest
        .lines()
        .find_map(|line| line.strip_prefix("rust-version = "))
        .expect("Cargo.toml has a rust-version")
        .trim_matches('"');
    let dockerfile = dockerfile();
    let image = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix("FROM rust:"))
        .expect("the build stage is FROM rust:VERSION-...");
    let pinned = image.split('-').next().unwrap();
    assert_eq!(
        pinned, declared,
        "the Dockerfile's toolchain and Cargo.toml's rust-version disagree"
    );
    assert!(
        dockerfile.contains("cargo build --release --locked"),
        "the image must build exactly Cargo.lock"
    );
    assert!(dockerfile.contains(&format!("ENTRYPOINT [\"{IMAGE_BINARY}\"]")));

    // A dependency that needs a newer compiler than declared would fail the
    // image build (and every build with the declared toolchain).
    let metadata: Value = serde_json::from_str(&output(
        Command::new(env!("CARGO"))
            .args(["metadata", "--format-version", "1", "--locked", "--offline"])
            .current_dir(repo()),
    ))
    .expect("cargo metadata is JSON");
    let version = |text: &str| -> Vec<u32> {
        text.split('.')
            .map(|part| part.parse().expect("numeric version"))
            .collect()
    };
    let declared_version = version(declared);
    let too_new: Vec<String> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|package| {
            let needed = package["rust_version"].as_str()?;
            (version(needed) > declared_version)
                .then(|| format!("{} needs {needed}", package["name"]))
        })
        .collect();
    assert!(
        too_new.is_empty(),
        "rust-version {declared} is too old: {too_new:?}"
    );
}

/// `.dockerignore` in the allow-list form it is written in: `*`, then
/// `!path` lines (a trailing `/` for a directory).
fn docker_context_paths() -> Vec<String> {
    let text = fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'));
    assert_eq!(
        lines.next(),
        Some("*"),
        ".dockerignore starts by excluding everything"
    );
    lines
        .map(|line| {
            line.strip_prefix('!')
                .unwrap_or_else(|| panic!(".dockerignore: expected only !path lines, got {line:?}"))
                .trim_end_matches('/')
                .to_string()
        })
        .collect()
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
}

#[test]
fn docker_build_context_holds_what_cargo_needs() {
    let context = tempfile::tempdir().unwrap();
    for path in docker_context_paths() {
        copy_tree(&repo().join(&path), &context.path().join(&path));
    }
    // Every COPY of the build stage finds its source in the context.
    for line in dockerfile().lines() {
        let Some(copy) = line.strip_prefix("COPY ") else {
            continue;
        };
        if copy.starts_with("--from=") {
            continue;
        }
        let words: Vec<&str> = copy.split_whitespace().collect();
        for source in &words[..words.len() - 1] {
            assert!(
                context.path().join(source).exists(),
                "COPY {source}: not in the build context .dockerignore leaves"
            );
        }
    }
    // Reads the manifest, its targets (a [[bench]] without its file is an
    // error) and the lock file, as the image build's first step does.
    output(
        Command::new(env!("CARGO"))
            .args(["fetch", "--locked", "--offline"])
            .current_dir(context.path()),
    );
}

// ---------------------------------------------------------------------------
// The manifests
// ---------------------------------------------------------------------------

struct Built {
    name: String,
    yaml: String,
    resources: Vec<Value>,
}

fn kustomize(dir: &Path) -> Built {
    let yaml = output(Command::new(tool("kubectl")).arg("kustomize").arg(dir));
    let resources: Vec<Value> = serde_saphyr::from_multiple(&yaml)
        .unwrap_or_else(|e| panic!("kustomize output of {}: {e}", dir.display()));
    Built {
        name: dir.display().to_string(),
        yaml,
        resources,
    }
}

fn overlay(name: &str) -> Built {
    kustomize(&repo().join("deploy/kubernetes/overlays").join(name))
}

/// The production overlay with the optional ServiceMonitor component, as
/// the Kubernetes guide and its kustomization.yaml tell to add it: a copy
/// with the `components` lines uncommented.
fn production_with_service_monitor() -> Built {
    let overlay = repo().join("deploy/kubernetes/overlays/production");
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&overlay, dir.path());
    // kustomize takes only relative paths to other kustomizations.
    let up = "../".repeat(dir.path().components().count() - 1);
    let kubernetes =
        Path::new(&up).join(repo().join("deploy/kubernetes").strip_prefix("/").unwrap());
    let text = fs::read_to_string(overlay.join("kustomization.yaml")).unwrap();
    let enabled = text.replace(
        "# components:\n#   - ../../components/servicemonitor\n",
        "components:\n  - ../../components/servicemonitor\n",
    );
    assert_ne!(enabled, text, "the production overlay names the component");
    fs::write(
        dir.path().join("kustomization.yaml"),
        enabled.replace("../../", &format!("{}/", kubernetes.display())),
    )
    .unwrap();
    kustomize(dir.path())
}

impl Built {
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.resources
            .iter()
            .filter(|r| r["kind"] == kind)
            .collect()
    }

    fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.resources
            .iter()
            .find(|r| r["kind"] == kind && r["metadata"]["name"] == name)
    }

    fn one(&self, kind: &str) -> &Value {
        let all = self.all(kind);
        assert_eq!(all.len(), 1, "{}: expected one {kind}", self.name);
        all[0]
    }

    fn pod_spec(&self) -> &Value {
        &self.one("Deployment")["spec"]["template"]["spec"]
    }

    fn container(&self) -> &Value {
        let containers = self.pod_spec()["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "{}: one container", self.name);
        &containers[0]
    }

    fn args(&self) -> Vec<String> {
        strings(&self.container()["args"])
    }

    /// The `-c` argument: where the pod reads gateway.yaml.
    fn config_path(&self) -> String {
        let args = self.args();
        let at = args
            .iter()
            .position(|a| a == "-c")
            .expect("the container's args name the config with -c");
        args[at + 1].clone()
    }

    /// The volume mounted at `mount_path`.
    fn volume_at(&self, mount_path: &str) -> &Value {
        let mount = self.container()["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == mount_path)
            .unwrap_or_else(|| panic!("{}: nothing is mounted at {mount_path}", self.name));
        self.pod_spec()["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("{}: no volume {}", self.name, mount["name"]))
    }

    /// gateway.yaml as the overlay's ConfigMap holds it.
    fn config_text(&self) -> String {
        let path = self.config_path();
        let (dir, file) = path.rsplit_once('/').unwrap();
        let volume = self.volume_at(dir);
        let name = volume["configMap"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: {dir} is not a ConfigMap volume", self.name));
        let config_map = self
            .find("ConfigMap", name)
            .unwrap_or_else(|| panic!("{}: the overlay generates no ConfigMap {name}", self.name));
        config_map["data"][file]
            .as_str()
            .unwrap_or_else(|| panic!("{}: ConfigMap {name} has no {file}", self.name))
            .to_string()
    }

    /// The config, parsed as jwtgate parses it with the container's
    /// environment.
    fn config(&self) -> GatewayConfig {
        let env = self.env();
        jwtgate::config::parse(Path::new("gateway.yaml"), &self.config_text(), &|name| {
            env.get(name).cloned()
        })
        .unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }

    /// The container's environment (literal values only).
    fn env(&self) -> BTreeMap<String, String> {
        self.container()["env"]
            .as_array()
            .map(|env| {
                env.iter()
                    .map(|var| {
                        let value = var["value"].as_str().unwrap_or_else(|| {
                            panic!("{}: env {} is not a literal", self.name, var["name"])
                        });
                        (var["name"].as_str().unwrap().to_string(), value.to_string())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn container_port(&self, name: &str) -> u64 {
        self.container()["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{}: no container port {name}", self.name))["containerPort"]
            .as_u64()
            .unwrap()
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

#[test]
fn overlays_validate_against_the_kubernetes_schemas() {
    for built in OVERLAYS
        .iter()
        .map(|name| overlay(name))
        .chain([production_with_service_monitor()])
    {
        // The ServiceMonitor's CRD has no schema here; its shape is checked
        // in `deployments_keep_the_pod_contract`.
        let core: Vec<&str> = built
            .yaml
            .split("\n---\n")
            .filter(|doc| !doc.contains("kind: ServiceMonitor"))
            .collect();
        let file = tempfile::NamedTempFile::new().unwrap();
        fs::write(file.path(), core.join("\n---\n")).unwrap();
        for version in [Some(OLDEST_KUBERNETES), None] {
            let mut validate = Command::new(tool("kubernetes-validate"));
            validate.args(["--strict", "--quiet"]);
            if let Some(version) = version {
                validate.args(["--kubernetes-version", version]);
            }
            output(validate.arg(file.path()));
        }
    }
}

/// The strict validation is worth something only if it refuses a field
/// Kubernetes does not know; a typo in a securityContext is the kind of
/// mistake that would otherwise pass silently.
#[test]
fn schema_validation_refuses_an_unknown_field() {
    let built = overlay("demo");
    let broken = built.yaml.replacen(
        "readOnlyRootFilesystem: true",
        "readOnlyRootFileSystem: true",
        1,
    );
    assert_ne!(broken, built.yaml);
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), broken).unwrap();
    let status = Command::new(tool("kubernetes-validate"))
        .args(["--strict", "--quiet"])
        .arg(file.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "an unknown field passed validation");
}

#[test]
fn deployments_keep_the_pod_contract() {
    for name in OVERLAYS {
        let built = overlay(name);
        let pod = built.pod_spec();
        let container = built.container();
        let context = format!("overlay {name}");

        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{context}");
        assert_ne!(pod["securityContext"]["runAsUser"], 0, "{context}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{context}"
        );
        assert_eq!(pod["automountServiceAccountToken"], false, "{context}");
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true, "{context}");
        assert_eq!(security["allowPrivilegeEscalation"], false, "{context}");
        assert_eq!(
            security["capabilities"]["drop"],
            json!(["ALL"]),
            "{context}"
        );
        assert!(
            built.args().iter().any(|a| a == "--watch"),
            "{context}: without --watch a ConfigMap update is not reloaded"
        );

        // Requests and a memory limit, sized above the measured idle RSS.
        let resources = &container["resources"];
        assert!(resources["requests"]["cpu"].is_string(), "{context}");
        assert!(resources["requests"]["memory"].is_string(), "{context}");
        assert!(resources["limits"]["memory"].is_string(), "{context}");

        // Probes on the admin listener's paths, and that port is the one
        // the config's admin address binds in the pod.
        let config = built.config();
        let admin_port = port_of(&config.admin.addr);
        assert_eq!(built.container_port("admin"), admin_port, "{context}");
        for (probe, path) in [
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"], path, "{context}: {probe}");
            assert_eq!(get["port"], "admin", "{context}: {probe}");
        }
        assert!(
            config.admin.addr.starts_with("0.0.0.0:"),
            "{context}: the kubelet probes the pod's address, so admin binds 0.0.0.0 in the pod, not {}",
            config.admin.addr
        );
        assert!(
            config.listen.http.addr.starts_with("0.0.0.0:"),
            "{context}: the proxy binds 0.0.0.0 in the pod, not {}",
            config.listen.http.addr
        );
        assert_eq!(
            built.container_port("http"),
            port_of(&config.listen.http.addr),
            "{context}"
        );
        if let Some(https) = &config.listen.https {
            assert!(https.addr.starts_with("0.0.0.0:"), "{context}");
            assert_eq!(
                built.container_port("https"),
                port_of(&https.addr),
                "{context}"
            );
        }

        // The key cache is an emptyDir: writable on a read-only root.
        let cache = config
            .keys_cache_dir
            .as_ref()
            .unwrap_or_else(|| panic!("{context}: keys_cache_dir is not set"));
        let volume = built.volume_at(cache.to_str().unwrap());
        assert!(volume["emptyDir"].is_object(), "{context}: {volume}");

        // The kubelet must not kill the process mid-drain.
        let drain = config.server.grace_period + config.server.graceful_shutdown_timeout;
        let termination = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        assert!(
            Duration::from_secs(termination) > drain,
            "{context}: terminationGracePeriodSeconds {termination} must exceed grace_period + graceful_shutdown_timeout ({drain:?})"
        );

        // The admin port is neither on the Service nor open to everyone.
        let service = built.find("Service", "jwtgate").expect("Service jwtgate");
        for port in service["spec"]["ports"].as_array().unwrap() {
            assert_ne!(port["targetPort"], "admin", "{context}");
            assert_ne!(port["targetPort"], admin_port, "{context}");
        }
        let policy = built.one("NetworkPolicy");
        assert_eq!(
            policy["spec"]["podSelector"]["matchLabels"],
            built.one("Deployment")["spec"]["selector"]["matchLabels"],
            "{context}"
        );
        for rule in policy["spec"]["ingress"].as_array().unwrap() {
            let admin = rule["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["port"] == "admin" || p["port"] == admin_port);
            if admin {
                assert!(
                    rule["from"].as_array().is_some_and(|from| !from.is_empty()),
                    "{context}: the admin port must be open to chosen peers only: {rule}"
                );
            }
        }

        // Replicas: the autoscaler owns the count; the budget keeps some.
        assert!(
            built.one("Deployment")["spec"]["replicas"].is_null(),
            "{context}: with an autoscaler, the Deployment must not set replicas"
        );
        let hpa = built.one("HorizontalPodAutoscaler");
        assert_eq!(
            hpa["spec"]["scaleTargetRef"]["name"], "jwtgate",
            "{context}"
        );
        assert!(
            hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2,
            "{context}"
        );
        let budget = built.one("PodDisruptionBudget");
        assert_eq!(
            budget["spec"]["selector"]["matchLabels"],
            built.one("Deployment")["spec"]["selector"]["matchLabels"],
            "{context}"
        );
    }

    let production = overlay("production");
    assert!(production.find("ServiceMonitor", "jwtgate").is_none());
    assert_eq!(
        production.find("Service", "jwtgate").unwrap()["spec"]["type"],
        "LoadBalancer"
    );

    // The optional ServiceMonitor scrapes the admin port's /metrics through
    // a Service that selects the pods and exposes nothing else.
    let monitored = production_with_service_monitor();
    let monitor = monitored.one("ServiceMonitor");
    let selector = &monitor["spec"]["selector"]["matchLabels"];
    let services: Vec<&Value> = monitored
        .all("Service")
        .into_iter()
        .filter(|service| {
            selector
                .as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| &service["metadata"]["labels"][k] == v)
        })
        .collect();
    assert_eq!(services.len(), 1, "the ServiceMonitor selects one Service");
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    let ports = services[0]["spec"]["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["name"], endpoint["port"]);
    assert_eq!(ports[0]["targetPort"], "admin");
    assert_eq!(
        services[0]["spec"]["selector"],
        monitored.one("Deployment")["spec"]["selector"]["matchLabels"]
    );
}

/// Production's replicas share revocations and rate-limit budgets through
/// a Redis the operator provides: its URL from the Deployment's
/// environment, its password from a file of a Secret volume, the
/// revocation list's disk copy on an emptyDir. (That the config compiles
/// with them is `each_overlays_config_passes_check_in_its_pod`.)
#[test]
fn production_shares_state_through_redis() {
    let built = overlay("production");
    let config = built.config();
    let redis = config.redis.as_ref().expect("production has a redis block");
    let text = built.config_text();
    let variable = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("url: \"${"))
        .and_then(|rest| rest.strip_suffix("}\""))
        .expect("redis.url is ${VARIABLE}");
    assert_eq!(built.env().get(variable), Some(&redis.url));
    assert!(redis.url.starts_with("redis://"), "{}", redis.url);

    let password = redis.password.as_ref().expect("a password");
    let file = password.file.as_ref().expect("the password is a file");
    let (dir, _) = file.to_str().unwrap().rsplit_once('/').unwrap();
    assert!(built.volume_at(dir)["secret"].is_object(), "{dir}");

    let revocation = config.revocation.as_ref().expect("revocation");
    assert!(revocation.redis.is_some(), "revocation.redis");
    assert!(!revocation.admin_tokens.is_empty(), "admin tokens");
    let dir = revocation.dir.as_ref().expect("revocation.dir");
    assert!(
        built.volume_at(dir.to_str().unwrap())["emptyDir"].is_object(),
        "revocation.dir on an emptyDir"
    );
    assert!(config.rate_limit.redis.is_some(), "rate_limit.redis");
    assert!(
        config
            .routes
            .iter()
            .any(|route| !route.rate_limits.is_empty()),
        "a route with rate limits to share"
    );
}

/// The Kubernetes guide, which documents every checkov skip.
const GUIDE: &str = "docs/guides/kubernetes.md";

/// checkov's JSON reports for `files` (one per framework), and whether it
/// exited 0. It runs in a network namespace of its own, with nothing but
/// loopback: the scan must need no network, in CI or anywhere.
fn checkov(files: &[PathBuf]) -> (bool, Vec<Value>) {
    must_be_root();
    let mut command = Command::new("unshare");
    command
        .args(["--net", "--"])
        .arg(tool("checkov"))
        .args(["--framework", "kubernetes", "dockerfile"])
        .args(["--skip-download", "--output", "json", "--compact"]);
    for file in files {
        command.arg("-f").arg(file);
    }
    let result = command.output().expect("run checkov");
    let stdout = String::from_utf8_lossy(&result.stdout);
    let parsed: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "checkov printed no JSON ({e}):\n{stdout}{}",
            String::from_utf8_lossy(&result.stderr)
        )
    });
    let reports = match parsed {
        Value::Array(reports) => reports,
        report => vec![report],
    };
    (result.status.success(), reports)
}

fn report<'a>(reports: &'a [Value], framework: &str) -> &'a Value {
    reports
        .iter()
        .find(|r| r["check_type"] == framework)
        .unwrap_or_else(|| panic!("no {framework} report: {reports:?}"))
}

fn check_ids(report: &Value, outcome: &str) -> Vec<String> {
    report["results"][outcome]
        .as_array()
        .map(|checks| {
            checks
                .iter()
                .map(|c| format!("{} {}", c["check_id"].as_str().unwrap(), c["resource"]))
                .collect()
        })
        .unwrap_or_default()
}

/// The kustomize output of every overlay (and production with the
/// ServiceMonitor) in files, and the Dockerfile, as checkov takes them.
fn scanned_files(dir: &Path, dockerfile: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for (index, built) in OVERLAYS
        .iter()
        .map(|name| overlay(name))
        .chain([production_with_service_monitor()])
        .enumerate()
    {
        let path = dir.join(format!("overlay-{index}.yaml"));
        fs::write(&path, &built.yaml).unwrap();
        files.push(path);
    }
    // checkov recognizes a Dockerfile by its name.
    let docker_dir = dir.join("image");
    fs::create_dir(&docker_dir).unwrap();
    fs::write(docker_dir.join("Dockerfile"), dockerfile).unwrap();
    files.push(docker_dir.join("Dockerfile"));
    files
}

/// checkov, an IaC scanner, finds nothing in what the overlays render nor
/// in the image: every check passes but those skipped on purpose, each by
/// an annotation with its reason, and each explained in the guide.
#[test]
fn checkov_passes_every_overlay_and_the_dockerfile() {
    let dir = tempfile::tempdir().unwrap();
    let (success, reports) = checkov(&scanned_files(dir.path(), &dockerfile()));
    let guide = fs::read_to_string(repo().join(GUIDE)).unwrap();
    for framework in ["kubernetes", "dockerfile"] {
        let report = report(&reports, framework);
        let summary = &report["summary"];
        assert_eq!(summary["parsing_errors"], 0, "{framework}: {summary}");
        assert!(
            summary["passed"].as_u64().unwrap() > 0,
            "{framework}: {summary}"
        );
        assert!(
            check_ids(report, "failed_checks").is_empty(),
            "{framework}: {:#?}",
            check_ids(report, "failed_checks")
        );
        for skipped in report["results"]["skipped_checks"].as_array().unwrap() {
            let id = skipped["check_id"].as_str().unwrap();
            let reason = skipped["check_result"]["suppress_comment"]
                .as_str()
                .unwrap_or_default();
            assert!(
                reason.len() > 20 && reason != "No comment provided",
                "{id} on {} is skipped without a reason",
                skipped["resource"]
            );
            assert!(guide.contains(id), "{GUIDE} does not explain skipping {id}");
        }
    }
    assert!(success, "checkov exited non-zero: {reports:#?}");
}

/// The scan above is worth something only if it fails what it should: the
/// two findings the deployment files once had, objects in the default
/// namespace and an image without a HEALTHCHECK.
#[test]
fn checkov_fails_the_default_namespace_and_an_image_without_healthcheck() {
    let dir = tempfile::tempdir().unwrap();
    let without_healthcheck: String = dockerfile()
        .replace("\\\n", " ")
        .lines()
        .filter(|line| !line.starts_with("HEALTHCHECK "))
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(
        without_healthcheck.len() < dockerfile().len(),
        "no HEALTHCHECK to remove"
    );
    let files = scanned_files(dir.path(), &without_healthcheck);
    let demo = fs::read_to_string(&files[0]).unwrap();
    let in_default: String = demo
        .lines()
        .filter(|line| !line.trim_start().starts_with("namespace: "))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_ne!(in_default, demo);
    fs::write(&files[0], in_default).unwrap();

    let (success, reports) = checkov(&files);
    assert!(!success, "checkov passed");
    let kubernetes = check_ids(report(&reports, "kubernetes"), "failed_checks");
    assert!(
        kubernetes.iter().any(|c| c.starts_with("CKV_K8S_21 ")),
        "{kubernetes:?}"
    );
    let docker = check_ids(report(&reports, "dockerfile"), "failed_checks");
    assert!(
        docker.iter().any(|c| c.starts_with("CKV_DOCKER_2 ")),
        "{docker:?}"
    );
}

/// Each overlay brings its own Namespace and puts everything in it: nothing
/// lands in `default`, where any workload of the cluster may be. The
/// namespace enforces the "restricted" Pod Security Standard, which the
/// pod meets, so a change that breaks it is refused by the cluster.
#[test]
fn every_object_lands_in_the_overlays_own_namespace() {
    for built in OVERLAYS
        .iter()
        .map(|name| overlay(name))
        .chain([production_with_service_monitor()])
    {
        let namespace = built.one("Namespace");
        let name = namespace["metadata"]["name"].as_str().unwrap();
        assert_ne!(name, "default", "{}", built.name);
        assert_eq!(
            namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted",
            "{}",
            built.name
        );
        for resource in built.resources.iter().filter(|r| r["kind"] != "Namespace") {
            assert_eq!(
                resource["metadata"]["namespace"], name,
                "{}: {} {}",
                built.name, resource["kind"], resource["metadata"]["name"]
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The pod's filesystem and process
// ---------------------------------------------------------------------------

/// Files a volume holds.
type Files = BTreeMap<String, Vec<u8>>;

/// Writes `files` into `dir` as the kubelet's atomic writer does: a new
/// hidden version directory, a `..data` link swapped to it by a rename, and
/// each file a link through `..data`; the old version goes last.
fn kubelet_write(dir: &Path, files: &Files, mode: u32, group: Option<u32>) {
    static VERSION: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let version = format!(
        "..2026_01_01_00_00_00.{}",
        VERSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let version_dir = dir.join(&version);
    fs::create_dir(&version_dir).unwrap();
    fs::set_permissions(&version_dir, fs::Permissions::from_mode(0o755)).unwrap();
    for (name, bytes) in files {
        let path = version_dir.join(name);
        fs::write(&path, bytes).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        if let Some(group) = group {
            std::os::unix::fs::chown(&path, None, Some(group)).unwrap();
        }
    }
    let previous = fs::read_link(dir.join("..data")).ok();
    let staged = dir.join("..data_tmp");
    symlink(&version, &staged).unwrap();
    fs::rename(&staged, dir.join("..data")).unwrap();
    for name in files.keys() {
        let link = dir.join(name);
        if fs::symlink_metadata(&link).is_err() {
            symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
    if let Some(previous) = previous {
        fs::remove_dir_all(dir.join(previous)).unwrap();
    }
}

fn decoded(map: &Value, base64: bool) -> Files {
    use base64::Engine;
    map.as_object()
        .map(|entries| {
            entries
                .iter()
                .map(|(name, value)| {
                    let text = value.as_str().unwrap();
                    let bytes = if base64 {
                        // YAML may fold a long value over lines.
                        let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
                        base64::engine::general_purpose::STANDARD
                            .decode(text)
                            .unwrap()
                    } else {
                        text.as_bytes().to_vec()
                    };
                    (name.clone(), bytes)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What the pod's volumes hold on the host, and where they go in the pod.
struct PodFs {
    dir: tempfile::TempDir,
    /// (host directory, mountPath, writable)
    volumes: Vec<(PathBuf, String, bool)>,
    /// Lines added to the pod's /etc/hosts, as cluster DNS would answer.
    hosts: Vec<String>,
}

impl PodFs {
    /// Each volume of the Deployment's container, filled from the overlay's
    /// ConfigMaps and Secrets, or from `external` for a Secret the operator
    /// creates beside the overlay.
    fn new(built: &Built, external: &BTreeMap<&str, Files>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let fs_group = built.pod_spec()["securityContext"]["fsGroup"]
            .as_u64()
            .map(|g| g as u32);
        let mut volumes = Vec::new();
        for (index, mount) in built.container()["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let mount_path = mount["mountPath"].as_str().unwrap().to_string();
            let volume = built.volume_at(&mount_path);
            let host = dir.path().join(format!("volume-{index}"));
            fs::create_dir(&host).unwrap();
            let writable = if let Some(config_map) = volume["configMap"].as_object() {
                let name = config_map["name"].as_str().unwrap();
                let resource = built
                    .find("ConfigMap", name)
                    .unwrap_or_else(|| panic!("{}: no ConfigMap {name}", built.name));
                let mut files = decoded(&resource["data"], false);
                files.extend(decoded(&resource["binaryData"], true));
                let mode = config_map
                    .get("defaultMode")
                    .map_or(0o644, |m| m.as_u64().unwrap() as u32);
                kubelet_write(&host, &files, mode, fs_group);
                false
            } else if let Some(secret) = volume["secret"].as_object() {
                let name = secret["secretName"].as_str().unwrap();
                let files = match built.find("Secret", name) {
                    Some(resource) => decoded(&resource["data"], true),
                    None => external.get(name).cloned().unwrap_or_else(|| {
                        panic!(
                            "{}: Secret {name} is neither generated by the overlay nor one the operator creates",
                            built.name
                        )
                    }),
                };
                let mode = secret
                    .get("defaultMode")
                    .map_or(0o644, |m| m.as_u64().unwrap() as u32);
                kubelet_write(&host, &files, mode, fs_group);
                false
            } else if volume["emptyDir"].is_object() {
                true
            } else {
                panic!("{}: unexpected volume {volume}", built.name);
            };
            // An emptyDir is world-writable; a ConfigMap or Secret volume's
            // directory is readable by all, its files as their mode says.
            let mode = if writable { 0o1777 } else { 0o755 };
            fs::set_permissions(&host, fs::Permissions::from_mode(mode)).unwrap();
            volumes.push((host, mount_path, writable));
        }
        PodFs {
            dir,
            volumes,
            hosts: Vec::new(),
        }
    }

    /// A directory that holds each volume at its mountPath (a link to the
    /// volume's host directory), for `jwtgate check --root`: the pod's
    /// files as a laptop would have copies of them.
    fn root(&self) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (host, target, _) in &self.volumes {
            let at = root.path().join(target.trim_start_matches('/'));
            fs::create_dir_all(at.parent().unwrap()).unwrap();
            symlink(host, at).unwrap();
        }
        root
    }

    fn host_dir(&self, mount_path: &str) -> &Path {
        &self
            .volumes
            .iter()
            .find(|(_, target, _)| target == mount_path)
            .unwrap_or_else(|| panic!("no volume at {mount_path}"))
            .0
    }

    /// `jwtgate ARGS` as the Deployment's container runs it: in a mount
    /// namespace with the pod's volumes, every other mount read-only, as the
    /// pod's user, group and fsGroup, without capabilities, with the
    /// container's environment and nothing else.
    fn command(&self, built: &Built, env: &BTreeMap<String, String>, args: &[String]) -> Command {
        must_be_root();
        let security = &built.pod_spec()["securityContext"];
        let user = security["runAsUser"].as_u64().expect("runAsUser");
        let group = security["runAsGroup"].as_u64().expect("runAsGroup");
        let fs_group = security["fsGroup"].as_u64().unwrap_or(group);
        let scratch = self.dir.path().join("scratch");
        fs::create_dir_all(&scratch).unwrap();

        let mut script = String::from("set -eu\n");
        // Writable layers over the top directories the pod's mount points
        // and the binary go into, so they can be created without touching
        // the host; on tmpfs, and read-only like the rest once done.
        script += &format!(
            "mount -t tmpfs -o mode=0755 scratch {scratch}\n",
            scratch = quote(&scratch)
        );
        for top in ["/etc", "/usr", "/var"] {
            let upper = scratch.join(&top[1..]);
            script += &format!(
                "mkdir -p {u}/upper {u}/work\n\
                 mount -t overlay overlay -o lowerdir={top},upperdir={u}/upper,workdir={u}/work {top}\n",
                u = quote(&upper)
            );
        }
        for (host, target, _) in &self.volumes {
            script += &format!(
                "mkdir -p {t}\nmount --bind {h} {t}\n",
                t = quote(target),
                h = quote(host)
            );
        }
        script += &format!(
            "touch {bin}\nmount --bind {exe} {bin}\n",
            bin = IMAGE_BINARY,
            exe = quote(Path::new(env!("CARGO_BIN_EXE_jwtgate")))
        );
        for line in &self.hosts {
            script += &format!("printf '%s\\n' {} >> /etc/hosts\n", quote(line));
        }
        let writable: Vec<&str> = self
            .volumes
            .iter()
            .filter(|(_, _, writable)| *writable)
            .map(|(_, target, _)| target.as_str())
            .collect();
        script += &format!(
            "mounts=$(while read -r _ _ _ _ point _; do echo \"$point\"; done < /proc/self/mountinfo)\n\
             for point in $mounts; do\n\
             \x20 case \"$point\" in /proc|/proc/*|/sys|/sys/*) continue ;; esac\n\
             \x20 case ' {writable} ' in *\" $point \"*) continue ;; esac\n\
             \x20 mount -o remount,bind,ro \"$point\"\n\
             done\n\
             exec setpriv --reuid={user} --regid={group} --groups={fs_group} \
             --bounding-set=-all --inh-caps=-all --no-new-privs -- {IMAGE_BINARY} \"$@\"\n",
            writable = writable.join(" ")
        );

        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(script)
            .arg("pod")
            .args(args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .envs(env)
            .current_dir("/");
        command
    }
}

fn quote(text: impl AsRef<std::ffi::OsStr>) -> String {
    let text = text.as_ref().to_str().unwrap();
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Secrets an overlay expects the operator to create (the Kubernetes guide
/// says how), made here: a self-signed certificate for the TLS listener's
/// host names, random secrets and tokens.
fn operator_secrets(name: &str, config: &GatewayConfig) -> BTreeMap<&'static str, Files> {
    let mut secrets = BTreeMap::new();
    if name != "production" {
        return secrets;
    }
    let https = config
        .listen
        .https
        .as_ref()
        .expect("production serves HTTPS");
    let hosts = &https.certificates[0].hosts;
    let san: Vec<String> = hosts.iter().map(|h| format!("DNS:{h}")).collect();
    let pki = common::Pki::new();
    pki.self_signed(&common::Cert {
        key: "tls.key",
        cert: "tls.crt",
        cn: &hosts[0],
        days: 90,
        extensions: &[&format!("subjectAltName={}", san.join(","))],
    });
    secrets.insert(
        "jwtgate-tls",
        Files::from([
            (
                "tls.crt".to_string(),
                fs::read(pki.path("tls.crt")).unwrap(),
            ),
            (
                "tls.key".to_string(),
                fs::read(pki.path("tls.key")).unwrap(),
            ),
        ]),
    );
    // The files of jwtgate-secrets the production config names: the HMAC
    // secret, the Redis password and the revocation API's admin token.
    let files = [
        "internal-hs256.secret",
        "redis-password",
        "revocation-admin-token",
    ]
    .into_iter()
    .map(|name| (name.to_string(), random_hex().into_bytes()));
    secrets.insert("jwtgate-secrets", files.collect());
    secrets
}

/// 32 random bytes in hex.
fn random_hex() -> String {
    let mut random = [0u8; 32];
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut random)
        .unwrap();
    random.iter().map(|b| format!("{b:02x}")).collect()
}

/// Upstream host names of the config that are not addresses: cluster DNS
/// names, answered in the pod's /etc/hosts with a loopback address.
fn cluster_names(config: &GatewayConfig) -> Vec<String> {
    let mut names: Vec<String> = config
        .routes
        .iter()
        .flat_map(|route| {
            route
                .upstream
                .iter()
                .flat_map(|upstream| upstream.addrs.iter())
        })
        .filter_map(|addr| {
            let host = addr.rsplit_once(':').unwrap().0;
            host.parse::<std::net::IpAddr>()
                .is_err()
                .then(|| host.to_string())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn each_overlays_config_passes_check_in_its_pod() {
    for name in OVERLAYS {
        let built = overlay(name);
        let config = built.config();
        let mut pod = PodFs::new(&built, &operator_secrets(name, &config));
        pod.hosts = cluster_names(&config)
            .iter()
            .map(|host| format!("127.0.0.1 {host}"))
            .collect();
        let args = ["check".to_string(), "-c".to_string(), built.config_path()];
        let stdout = output(&mut pod.command(&built, &built.env(), &args));
        assert!(
            stdout.contains(&format!("listen {}", config.listen.http.addr)),
            "overlay {name}: {stdout}"
        );
        assert!(
            stdout.contains("0.0.0.0:"),
            "overlay {name}: the pod listens on every address: {stdout}"
        );
    }
}

/// The demo config, rendered from its ConfigMap, passes `jwtgate check` on
/// a laptop: no pod, no environment (the listen addresses fall back to
/// loopback), with `--root` pointing at copies of the pod's mounted files.
/// Production's upstreams are cluster DNS names, which resolve only in the
/// cluster (its check in the pod's view is above).
#[test]
fn the_demo_config_passes_check_on_a_laptop_with_root() {
    let built = overlay("demo");
    let pod = PodFs::new(&built, &BTreeMap::new());
    let root = pod.root();
    let (config_dir, file) = built.config_path().rsplit_once('/').map_or_else(
        || panic!("the config path is absolute"),
        |(dir, file)| (dir.to_string(), file.to_string()),
    );
    // The rendered ConfigMap, wherever it was saved on the laptop.
    let rendered = pod.host_dir(&config_dir).join(file);
    let check = |root: Option<&Path>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_jwtgate"));
        command
            .arg("check")
            .arg("-c")
            .arg(&rendered)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap());
        if let Some(root) = root {
            command.arg("--root").arg(root);
        }
        command.output().unwrap()
    };

    let ran = check(Some(root.path()));
    let stdout = String::from_utf8_lossy(&ran.stdout);
    assert!(ran.status.success(), "{ran:?}");
    assert!(stdout.contains("listen 127.0.0.1:8080"), "{stdout}");
    assert!(stdout.contains("demo-hmac"), "{stdout}");

    // Without --root the HMAC secret is where only the pod has it.
    let ran = check(None);
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert_eq!(ran.status.code(), Some(1), "{ran:?}");
    assert!(
        stderr.contains("/etc/jwtgate/secrets/hs256.secret"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------
// The demo pod, running
// ---------------------------------------------------------------------------

/// A process started by [`PodFs::command`]; killed if the test ends early.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token(alg: Algorithm, key: &str, kid: Option<&str>, iss: &str, scope: &str) -> String {
    let now = common::now();
    let claims = json!({
        "iss": iss, "aud": "echo-api", "sub": "alice", "scope": scope,
        "iat": now, "exp": now + 600,
    });
    jwtgate::mint::Signer::from_file(&repo().join("deploy/dev-keys").join(key), alg)
        .unwrap()
        .sign(claims.as_object().unwrap(), kid, Some("JWT"))
        .unwrap()
}

/// GETs until `done` holds for the answer (status, body) or PATIENCE runs
/// out; returns the last answer.
async fn get_until(
    client: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    done: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut request = client.get(url).timeout(Duration::from_secs(5));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let answer = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.text().await.unwrap_or_default())
            }
            Err(e) => (0, e.to_string()),
        };
        if done(answer.0, &answer.1) || Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn the_demo_pod_runs_reloads_and_drains_as_its_manifest_says() {
    let built = overlay("demo");
    let config = built.config();
    let pod = PodFs::new(&built, &BTreeMap::new());

    // The container's environment, with each 0.0.0.0 listen address moved
    // to a loopback port (no network namespace of its own here), and the
    // echo upstream's, which the config defaults to a fixed port.
    let mut env = built.env();
    let mut ports = BTreeMap::new();
    for value in env.values_mut() {
        if let Some(port) = value.strip_prefix("0.0.0.0:") {
            let free = common::free_port();
            ports.insert(port.parse::<u64>().unwrap(), free);
            *value = format!("127.0.0.1:{free}");
        }
    }
    env.insert(
        "JWTGATE_ECHO".to_string(),
        format!("127.0.0.1:{}", common::free_port()),
    );
    let port_named = |name: &str| ports[&built.container_port(name)];
    let proxy = format!("http://127.0.0.1:{}", port_named("http"));
    let probe_url = |probe: &str| {
        let get = &built.container()[probe]["httpGet"];
        let port = ports[&built.container_port(get["port"].as_str().unwrap())];
        format!("http://127.0.0.1:{port}{}", get["path"].as_str().unwrap())
    };

    let log = pod.dir.path().join("pod.log");
    let log_file = fs::File::create(&log).unwrap();
    let mut running = Running {
        child: pod
            .command(&built, &env, &built.args())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("spawn unshare"),
        log,
    };
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    // The probes, in the kubelet's order: startup, liveness, readiness.
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let (status, body) = get_until(&client, &probe_url(probe), None, |s, _| s == 200).await;
        assert_eq!(status, 200, "{probe}: {body}\nlog:\n{}", running.log());
    }
    // The image's HEALTHCHECK, run as Docker would: in the container, with
    // its environment, which tells it where the admin listener is.
    let healthcheck = healthcheck()[1..].to_vec();
    let health = pod.command(&built, &env, &healthcheck).output().unwrap();
    assert!(health.status.success(), "HEALTHCHECK: {health:?}");

    // Tokens of both demo issuers: the RSA key from the ConfigMap's
    // jwks.json, the HMAC secret from the Secret volume (mode 0440, group
    // fsGroup), each read by the unprivileged user.
    let rsa = token(
        Algorithm::RS256,
        "rs256.pem",
        Some("demo-rs256"),
        "https://issuer.jwtgate.example",
        "echo:read",
    );
    let hmac = token(
        Algorithm::HS256,
        "hs256.secret",
        None,
        "https://hmac.jwtgate.example",
        "echo:read",
    );
    for bearer in [&rsa, &hmac] {
        let (status, body) = get_until(&client, &format!("{proxy}/echo"), Some(bearer), |s, _| {
            s != 0
        })
        .await;
        assert_eq!(status, 200, "{body}\nlog:\n{}", running.log());
        assert!(body.contains("alice"), "{body}");
    }
    let (status, _) = get_until(&client, &format!("{proxy}/echo"), None, |s, _| s != 0).await;
    assert_eq!(status, 401);

    // A ConfigMap update: the kubelet swaps `..data` to a new version of
    // the files. The new version adds an issuer whose keys are fetched, so
    // the key cache (the emptyDir) is written by the unprivileged process.
    let jwks = fs::read(repo().join("deploy/dev-keys/jwks.json")).unwrap();
    let jwks_server = common::serve_json(jwks, "");
    // Edited as text, as an operator edits the ConfigMap: new first items
    // of the `issuers` and `routes` lists.
    let updated = built
        .config_text()
        .replacen(
            "\nissuers:\n",
            &format!(
                "\nissuers:\n  - {{ name: remote, issuer: \"https://remote.jwtgate.example\", \
                 algorithms: [RS256], audiences: [echo-api], \
                 jwks_uri: \"http://{jwks_server}/jwks.json\", fetch: {{ allow_http: true }} }}\n"
            ),
            1,
        )
        .replacen(
            "\nroutes:\n",
            "\nroutes:\n  - { name: remote, match: { path_prefix: /remote }, \
             upstream: { addrs: [\"${JWTGATE_ECHO:-127.0.0.1:8081}\"] }, \
             auth: { issuers: [remote] }, forward: { claims: { sub: X-User-Id } } }\n",
            1,
        );
    assert_eq!(updated.matches("name: remote").count(), 2, "{updated}");
    let config_dir = built.config_path().rsplit_once('/').unwrap().0.to_string();
    let config_map = built
        .find(
            "ConfigMap",
            built.volume_at(&config_dir)["configMap"]["name"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let mut files = decoded(&config_map["data"], false);
    files.insert("gateway.yaml".to_string(), updated.into_bytes());
    let pid = running.child.id();
    kubelet_write(pod.host_dir(&config_dir), &files, 0o644, None);

    let remote = token(
        Algorithm::RS256,
        "rs256.pem",
        Some("demo-rs256"),
        "https://remote.jwtgate.example",
        "echo:read",
    );
    let (status, body) = get_until(
        &client,
        &format!("{proxy}/remote"),
        Some(&remote),
        |s, _| s == 200,
    )
    .await;
    assert_eq!(status, 200, "{body}\nlog:\n{}", running.log());
    assert!(
        running.child.try_wait().unwrap().is_none(),
        "the process restarted"
    );
    assert_eq!(running.child.id(), pid);
    let admin = format!("http://127.0.0.1:{}", port_named("admin"));
    let metrics = get_until(&client, &format!("{admin}/metrics"), None, |s, _| s == 200)
        .await
        .1;
    let reloads = |result| {
        common::metric_value(
            &metrics,
            "jwtgate_config_reloads_total",
            &[("result", result)],
        )
    };
    assert!(
        reloads("success") >= 1.0 && reloads("error") == 0.0,
        "reloaded by the watcher, without error:\n{}",
        common::relevant_lines(&metrics)
    );

    // The only writes: the cache file, in the emptyDir, owned by the pod's
    // user. Anything else would have hit a read-only filesystem.
    let cache_dir = pod.host_dir(config.keys_cache_dir.as_ref().unwrap().to_str().unwrap());
    let cached = cache_dir.join("remote.jwks.json");
    let deadline = Instant::now() + PATIENCE;
    while !cached.exists() && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    let owner = std::os::unix::fs::MetadataExt::uid(&fs::metadata(&cached).unwrap_or_else(|e| {
        panic!(
            "no key cache file in the emptyDir ({e}); log:\n{}",
            running.log()
        )
    }));
    assert_eq!(
        u64::from(owner),
        built.pod_spec()["securityContext"]["runAsUser"]
            .as_u64()
            .unwrap()
    );
    let log = running.log();
    for refusal in ["Read-only file system", "Permission denied", "cannot write"] {
        assert!(!log.contains(refusal), "{refusal}:\n{log}");
    }

    // SIGTERM: not ready at once, still alive and serving through the grace
    // period, then the drain, and a clean exit before the kubelet's SIGKILL.
    output(Command::new("kill").args(["-TERM", &pid.to_string()]));
    let (status, _) = get_until(&client, &probe_url("readinessProbe"), None, |s, _| s == 503).await;
    assert_eq!(status, 503, "readiness after SIGTERM");
    let health = pod.command(&built, &env, &healthcheck).output().unwrap();
    let said = String::from_utf8_lossy(&health.stderr);
    assert_eq!(
        health.status.code(),
        Some(1),
        "HEALTHCHECK while draining: {health:?}"
    );
    assert!(said.contains("503") && said.contains("draining"), "{said}");
    let (status, _) = get_until(&client, &probe_url("livenessProbe"), None, |s, _| s != 0).await;
    assert_eq!(status, 200, "liveness during the drain");
    let (status, _) = get_until(&client, &format!("{proxy}/public"), None, |s, _| s != 0).await;
    assert_eq!(status, 200, "served during the grace period");
    let termination = built.pod_spec()["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    let exit = running
        .wait(Duration::from_secs(termination) + PATIENCE)
        .unwrap_or_else(|| panic!("still running after SIGTERM; log:\n{}", running.log()));
    assert!(exit.success(), "{exit}; log:\n{}", running.log());
}
