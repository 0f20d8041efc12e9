//! The files of `deploy/`, checked by the programs that read them where they run here
//! (`systemd-analyze verify`, `nginx -t`), against each other (the socket nginx proxies to is the
//! one systemd holds, nginx's keep-alive is shorter than the app's), against the crate (every
//! `PREFORK_*` value they set is accepted by `Settings`), and against the running example (the
//! Kubernetes probes' paths answer 200 on `examples/prefork_server`, on the port `PORT` gives).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use prefork_pool::Settings;

use crate::deploy::systemd::{example_binary, http, Program};
use crate::helpers::ensure;
use crate::tools;

fn read(rel: &str) -> Result<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(rel);
    std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
}

fn scratch(name: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("prefork-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// The value of the first uncommented `Key=` line of a unit.
fn unit_value(unit: &str, key: &str) -> Option<String> {
    unit.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}=")))
        .map(str::to_string)
}

/// The `Environment=NAME=VALUE` lines of a unit.
fn unit_env(unit: &str) -> BTreeMap<String, String> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every `PREFORK_*` (and `PORT`, `WEB_CONCURRENCY`) value of `env` is one the crate accepts.
fn accepted(env: &BTreeMap<String, String>, file: &str) -> Result<Settings, String> {
    let s = Settings::from_lookup(|name| env.get(name).cloned());
    match s.error() {
        Some(e) => Err(format!("{file} sets a value the crate refuses: {e}")),
        None => Ok(s),
    }
}

fn run(cmd: &mut Command) -> Result<(bool, String), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// `systemd-analyze verify` on the unit pair, `ExecStart` pointing at the built example: no
/// error and no warning about them; the stop timeout exceeds the graceful one; the environment
/// is accepted by the crate.
pub fn systemd_units() -> Result<(), String> {
    let Some(exe) = example_binary() else {
        println!("    (skipped: examples/prefork_server is not built; `cargo test` builds it)");
        return Ok(());
    };
    let (socket, service) = (read("systemd/app.socket")?, read("systemd/app.service")?);
    let env = unit_env(&service);
    let settings = accepted(&env, "app.service")?;
    let graceful = settings
        .graceful_timeout()
        .ok_or("app.service does not set PREFORK_GRACEFUL_TIMEOUT")?;
    let stop: u64 = unit_value(&service, "TimeoutStopSec")
        .and_then(|v| v.parse().ok())
        .ok_or("app.service has no TimeoutStopSec in seconds")?;
    ensure(Duration::from_secs(stop) > graceful, || {
        format!("TimeoutStopSec={stop} is not above PREFORK_GRACEFUL_TIMEOUT {graceful:?}")
    })?;
    for (key, want) in [
        ("Type", "notify"),
        ("KillSignal", "SIGTERM"),
        ("KillMode", "mixed"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ] {
        let got = unit_value(&service, key);
        ensure(got.as_deref() == Some(want), || {
            format!("app.service {key}={got:?}, not {want}")
        })?;
    }
    ensure(env.contains_key("PREFORK_USER"), || {
        "app.service does not switch the workers to a user".into()
    })?;
    let Some(analyze) = tools::tool_or_skip(&tools::SYSTEMD_ANALYZE)? else {
        return Ok(());
    };
    let dir = scratch("units")?;
    let exec = unit_value(&service, "ExecStart").ok_or("app.service has no ExecStart")?;
    std::fs::write(dir.join("app.socket"), &socket).map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join("app.service"),
        service.replace(
            &format!("ExecStart={exec}"),
            &format!("ExecStart={}", exe.display()),
        ),
    )
    .map_err(|e| e.to_string())?;
    let (ok, text) = run(Command::new(analyze)
        .arg("verify")
        .arg(dir.join("app.socket"))
        .arg(dir.join("app.service")))?;
    let about_ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("app.service") || l.contains("app.socket"))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    ensure(ok && about_ours.is_empty(), || {
        format!("systemd-analyze verify (ok: {ok}):\n{text}")
    })
}

/// `nginx -t` on a configuration that includes the site, with a self-signed certificate made by
/// openssl for its TLS block (without openssl, the site without its TLS block); the upstream is
/// the socket app.socket holds, its keep-alive shorter than the app's, and nginx's forwarded
/// headers come from an address the app believes.
pub fn nginx_site() -> Result<(), String> {
    let site = read("nginx/app.conf")?;
    let (socket, service) = (read("systemd/app.socket")?, read("systemd/app.service")?);
    let settings = accepted(&unit_env(&service), "app.service")?;
    let listen = unit_value(&socket, "ListenStream").ok_or("app.socket has no ListenStream")?;
    ensure(site.contains(&format!("server {listen};")), || {
        format!("the nginx upstream is not app.socket's {listen}")
    })?;
    let upstream_idle = site
        .lines()
        .find_map(|l| l.trim().strip_prefix("keepalive_timeout "))
        .and_then(|v| {
            v.trim_end_matches(';')
                .strip_suffix('s')?
                .parse::<u64>()
                .ok()
        })
        .ok_or("no keepalive_timeout (in seconds) in the upstream block")?;
    let app_idle = settings.keep_alive().unwrap_or(Duration::from_secs(5));
    ensure(Duration::from_secs(upstream_idle) < app_idle, || {
        format!("nginx keeps idle upstream connections {upstream_idle}s, the app {app_idle:?}")
    })?;
    let proxy = listen.rsplit_once(':').map_or("", |(ip, _)| ip);
    let trusted = settings.forwarded_allow_ips().unwrap_or(&[]);
    ensure(trusted.iter().any(|t| t == proxy), || {
        format!("nginx ({proxy}) is not in PREFORK_FORWARDED_ALLOW_IPS {trusted:?}")
    })?;
    for header in ["X-Forwarded-For", "X-Forwarded-Proto", "Connection \"\""] {
        ensure(site.contains(&format!("proxy_set_header {header}")), || {
            format!("the site does not set {header}")
        })?;
    }
    let Some(nginx) = tools::tool_or_skip(&tools::NGINX)? else {
        return Ok(());
    };
    let dir = scratch("nginx-site")?;
    let site = match tools::tool_or_skip(&tools::OPENSSL)? {
        Some(openssl) => with_certificate(&site, &openssl, &dir)?,
        None => {
            // The site without its TLS block.
            let start = site
                .find("# --- TLS ---")
                .ok_or("no TLS marker in the site")?;
            let end = site.find("# --- end TLS ---").ok_or("no end TLS marker")?;
            format!("{}{}", &site[..start], &site[end..])
        }
    };
    std::fs::write(dir.join("app.conf"), site).map_err(|e| e.to_string())?;
    let d = dir.display();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n    \
             access_log off;\n    include {d}/app.conf;\n}}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let (ok, text) = run(Command::new(nginx)
        .arg("-t")
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("error.log")))?;
    let _ = std::fs::remove_dir_all(&dir);
    ensure(ok && text.contains("test is successful"), || {
        format!("nginx -t on the site:\n{text}")
    })
}

/// `site` with a self-signed certificate and its key, made by `openssl` in `dir`, in place of
/// the paths it names.
fn with_certificate(site: &str, openssl: &Path, dir: &Path) -> Result<String, String> {
    let (cert, key) = (dir.join("fullchain.pem"), dir.join("privkey.pem"));
    let (ok, text) = run(Command::new(openssl)
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=app.example.com", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert))?;
    ensure(ok, || {
        format!("openssl could not make a certificate: {text}")
    })?;
    replace(
        site,
        "/etc/ssl/app/fullchain.pem",
        &cert.display().to_string(),
    )
    .and_then(|s| replace(&s, "/etc/ssl/app/privkey.pem", &key.display().to_string()))
}

/// `text` with `from` replaced by `to`; an error if `from` is not in it (the file changed).
fn replace(text: &str, from: &str, to: &str) -> Result<String, String> {
    ensure(text.contains(from), || {
        format!("{from:?} is not in the file any more")
    })?;
    Ok(text.replace(from, to))
}

/// The recipe end to end: curl, over TLS (HTTP/2) from 127.0.0.2 with a forged
/// `X-Forwarded-For`, to nginx running the site (on a free loopback port, in front of the
/// example run with app.service's settings): the app answers, and its access log names the real
/// client (127.0.0.2, from nginx, which it trusts), never the forged address.
pub fn nginx_tls_live() -> Result<(), String> {
    let Some(exe) = example_binary() else {
        println!("    (skipped: examples/prefork_server is not built; `cargo test` builds it)");
        return Ok(());
    };
    let (Some(nginx), Some(openssl), Some(curl)) = (
        tools::tool_or_skip(&tools::NGINX)?,
        tools::tool_or_skip(&tools::OPENSSL)?,
        tools::tool_or_skip(&tools::CURL)?,
    ) else {
        return Ok(());
    };
    let dir = scratch("nginx-tls")?;
    let site = with_certificate(&read("nginx/app.conf")?, &openssl, &dir)?;
    let mut cmd = Command::new(exe);
    for (k, v) in unit_env(&read("systemd/app.service")?) {
        if k != "PREFORK_USER" && k != "PREFORK_GROUP" {
            cmd.env(k, v);
        }
    }
    let access = dir.join("access.log");
    cmd.env("PREFORK_BIND", "127.0.0.1:0")
        .env("WEB_CONCURRENCY", "1")
        .env("PREFORK_ACCESS_LOG", &access);
    let p = Program::start("nginx-tls-app", cmd)?;
    let result = (|| {
        let app = p.wait_line("listening on http://")?;
        // Only the TLS server, on a free loopback port, in front of the example.
        let tls = &site[site.find("# --- TLS ---").ok_or("no TLS marker")?..];
        let tls = replace(tls, "listen [::]:443 ssl http2;", "")?;
        let upstream = &site[..site.find("# Plain HTTP").ok_or("no plain HTTP marker")?];
        let upstream = replace(
            upstream,
            "server 127.0.0.1:8000;",
            &format!("server {app};"),
        )?;
        ensure(tls.contains("listen 443 ssl http2;"), || {
            "no listen 443".into()
        })?;
        let proxy = crate::nginx_process::start(&nginx, |d, port| {
            let tls = tls.replace(
                "listen 443 ssl http2;",
                &format!("listen 127.0.0.1:{port} ssl http2;"),
            );
            let d = d.display();
            format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
                 error_log {d}/error.log warn;\nevents {{ worker_connections 64; }}\nhttp {{\n\
                 access_log off;\nclient_body_temp_path {d}/client_body;\n\
                 proxy_temp_path {d}/proxy;\nfastcgi_temp_path {d}/fastcgi;\n\
                 uwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n{upstream}\n{tls}\n}}\n"
            )
        })?;
        let (ok, out) = run(Command::new(&curl)
            .args(["-sk", "--http2", "--interface", "127.0.0.2"])
            .args(["-H", "X-Forwarded-For: 203.0.113.7", "-X", "POST"])
            .args(["-w", "\n%{http_code} %{http_version}"])
            .arg(format!("https://{}/hello_world", proxy.addr)))?;
        ensure(
            ok && out.ends_with("\n201 2") && out.contains("session_id"),
            || format!("POST /hello_world through nginx (TLS): {out}"),
        )?;
        let end = std::time::Instant::now() + crate::helpers::LONG;
        let line = loop {
            let log = std::fs::read_to_string(&access).unwrap_or_default();
            if let Some(l) = log.lines().find(|l| l.contains("POST /hello_world")) {
                break l.to_string();
            }
            ensure(std::time::Instant::now() < end, || {
                format!(
                    "no access line for the request in {}: {log}",
                    access.display()
                )
            })?;
            std::thread::sleep(Duration::from_millis(50));
        };
        ensure(
            line.starts_with("127.0.0.2 ") && !line.contains("203.0.113.7"),
            || format!("the access line does not name the real client: {line}"),
        )
    })();
    let r = p.finish(result);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

/// The lines of the block that `key:` opens (those indented deeper than it), from `from`.
fn block<'a>(lines: &[&'a str], key: &str) -> Vec<&'a str> {
    let Some(i) = lines.iter().position(|l| l.trim() == format!("{key}:")) else {
        return Vec::new();
    };
    let indent = |l: &str| l.len() - l.trim_start().len();
    let depth = indent(lines[i]);
    lines[i + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || indent(l) > depth)
        .copied()
        .collect()
}

/// The value of the first `key: value` line of `lines`, unquoted.
fn field(lines: &[&str], key: &str) -> Option<String> {
    lines.iter().find_map(|l| {
        let v = l
            .trim()
            .trim_start_matches("- ")
            .strip_prefix(&format!("{key}:"))?;
        Some(v.trim().trim_matches('"').to_string())
    })
}

/// The Deployment's probes are on the health routes the example serves, on the port `PORT`
/// gives, which is the container's and the Service's target port; the grace period covers the
/// preStop sleep and the graceful timeout; the environment is accepted by the crate. Then the
/// example, started as the pod would start it (but on a free loopback port), answers 200 on
/// every probe path.
pub fn kubernetes() -> Result<(), String> {
    let yaml = read("kubernetes/app.yaml")?;
    let lines: Vec<&str> = yaml
        .lines()
        .filter(|l| !l.trim().starts_with('#'))
        .collect();
    let mut env = BTreeMap::new();
    for pair in lines.windows(2) {
        if let (Some(name), Some(value)) = (
            pair[0].trim().strip_prefix("- name: "),
            pair[1].trim().strip_prefix("value: "),
        ) {
            env.insert(name.to_string(), value.trim_matches('"').to_string());
        }
    }
    let settings = accepted(&env, "app.yaml")?;
    let port = env
        .get("PORT")
        .ok_or("the Deployment sets no PORT")?
        .clone();
    let container_port = field(&block(&lines, "ports"), "containerPort");
    ensure(container_port.as_deref() == Some(port.as_str()), || {
        format!("containerPort {container_port:?}, PORT {port}")
    })?;
    let service = &yaml[yaml.find("kind: Service").ok_or("no Service")?..];
    let service: Vec<&str> = service.lines().collect();
    let target = field(&service, "targetPort");
    ensure(target.as_deref() == Some(port.as_str()), || {
        format!("the Service's targetPort {target:?}, PORT {port}")
    })?;
    let mut paths = Vec::new();
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let b = block(&lines, probe);
        let (path, p) = (field(&b, "path"), field(&b, "port"));
        ensure(p.as_deref() == Some(port.as_str()), || {
            format!("{probe} port {p:?}, PORT {port}")
        })?;
        paths.push((probe, path.ok_or(format!("{probe} has no path"))?));
    }
    let grace: u64 = field(&lines, "terminationGracePeriodSeconds")
        .and_then(|v| v.parse().ok())
        .ok_or("no terminationGracePeriodSeconds")?;
    let sleep: u64 = yaml
        .split("command: [\"sleep\", \"")
        .nth(1)
        .and_then(|s| s.split('"').next()?.parse().ok())
        .ok_or("no preStop sleep")?;
    let graceful = settings
        .graceful_timeout()
        .unwrap_or(Duration::from_secs(30));
    ensure(
        Duration::from_secs(grace) > Duration::from_secs(sleep) + graceful,
        || format!("terminationGracePeriodSeconds {grace} <= preStop {sleep} s + {graceful:?}"),
    )?;
    let Some(exe) = example_binary() else {
        println!("    (skipped: examples/prefork_server is not built; `cargo test` builds it)");
        return Ok(());
    };
    let mut cmd = Command::new(exe);
    for (k, v) in &env {
        cmd.env(k, v);
    }
    // The pod's settings, on a free loopback port instead of 0.0.0.0:PORT.
    cmd.env("PREFORK_BIND", "127.0.0.1:0");
    let p = Program::start("k8s-probes", cmd)?;
    let result = (|| {
        let addr = p.wait_line("listening on http://")?;
        for (probe, path) in &paths {
            let mut last = (0, String::new());
            // Readiness says 503 until the workers are up: a probe is repeated, as the kubelet does.
            for _ in 0..100 {
                last = http(&addr, "GET", path)?;
                if last.0 == 200 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            ensure(last.0 == 200, || {
                format!("{probe} GET {path}: {} {}", last.0, last.1)
            })?;
        }
        Ok(())
    })();
    p.finish(result)
}
