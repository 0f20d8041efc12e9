//! [`Settings`] from a map, never the process environment (the tests run in parallel threads).

use super::*;

fn from(vars: &[(&str, &str)]) -> Settings {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::from_lookup(move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
}

fn refused(var: &str, value: &str) -> BuildError {
    let s = from(&[(var, value)]);
    let e = s
        .error()
        .unwrap_or_else(|| panic!("{var}={value:?} was taken"))
        .clone();
    assert_eq!(e.field, var, "{e}");
    assert_eq!(e.value, format!("{value:?}"), "{e}");
    e
}

#[test]
fn nothing_set_is_nothing_read() {
    let s = from(&[]);
    assert!(s.error().is_none());
    assert!(s.bind().is_none() && s.processes().is_none() && s.threads().is_none());
    assert!(s.timeout().is_none() && s.log_level().is_none() && s.access_log().is_none());
}

#[test]
fn port_listens_on_every_interface_as_gunicorn() {
    let s = from(&[("PORT", "8080")]);
    assert_eq!(s.bind().unwrap(), [BindAddr::Tcp("0.0.0.0:8080".into())]);
    assert_eq!(s.bind.as_ref().unwrap().1, "PORT");
    assert_eq!(
        from(&[("PORT", "0")]).bind().unwrap()[0].to_string(),
        "0.0.0.0:0"
    );
}

#[test]
fn a_bad_port_names_the_range_not_a_process_to_stop() {
    let e = refused("PORT", "99999");
    assert_eq!(
        e.to_string(),
        r#"invalid `PORT` = "99999": a port number, 1..=65535 (0: any free port)"#
    );
    for bad in ["", "-1", "http", "80.5"] {
        refused("PORT", bad);
    }
}

#[test]
fn prefork_bind_is_a_list_and_wins_over_port() {
    let s = from(&[
        (
            "PREFORK_BIND",
            "127.0.0.1:8000, [::1]:8001 unix:/run/app.sock",
        ),
        ("PORT", "9000"),
    ]);
    assert_eq!(
        s.bind().unwrap(),
        [
            BindAddr::Tcp("127.0.0.1:8000".into()),
            BindAddr::Tcp("[::1]:8001".into()),
            BindAddr::Unix("/run/app.sock".into()),
        ]
    );
    assert_eq!(s.bind.as_ref().unwrap().1, "PREFORK_BIND");
    assert_eq!(
        from(&[("PREFORK_BIND", "localhost:80")])
            .bind()
            .unwrap()
            .len(),
        1
    );
    for bad in [
        "",
        "127.0.0.1",
        ":80",
        "127.0.0.1:99999",
        "unix:",
        "[::1:80",
        "a:b",
    ] {
        let e = refused("PREFORK_BIND", bad);
        assert!(e.allowed.contains("unix:PATH"), "{e}");
    }
}

#[test]
fn web_concurrency_and_threads_are_counts_named_by_their_variable() {
    let s = from(&[("WEB_CONCURRENCY", "4"), ("PREFORK_THREADS", " 2 ")]);
    assert_eq!((s.processes(), s.threads()), (Some(4), Some(2)));
    let e = refused("WEB_CONCURRENCY", "0");
    assert!(e.to_string().contains("1..=4096"), "{e}");
    for bad in ["abc", "-1", "", "1.5", "4097"] {
        refused("WEB_CONCURRENCY", bad);
        refused("PREFORK_THREADS", bad);
    }
    refused("PREFORK_THREADS", "0");
}

#[test]
fn durations_take_seconds_or_a_unit_within_their_range() {
    let s = from(&[
        ("PREFORK_TIMEOUT", "45"),
        ("PREFORK_GRACEFUL_TIMEOUT", "2m"),
        ("PREFORK_KEEP_ALIVE", "500ms"),
    ]);
    assert_eq!(s.timeout(), Some(Duration::from_secs(45)));
    assert_eq!(s.graceful_timeout(), Some(Duration::from_secs(120)));
    assert_eq!(s.keep_alive(), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("0.25"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
    assert_eq!(parse_duration(" 30s "), Some(Duration::from_secs(30)));
    for bad in ["", "abc", "-5", "+5", "1d", "NaN", "inf", "0", "25h"] {
        let e = refused("PREFORK_TIMEOUT", bad);
        assert!(e.allowed.contains("1ms..=24h"), "{e}");
        refused("PREFORK_KEEP_ALIVE", bad);
    }
    let e = refused("PREFORK_GRACEFUL_TIMEOUT", "50ms");
    assert!(e.allowed.contains("100ms..=24h"), "{e}");
}

#[test]
fn max_requests_and_its_jitter() {
    let s = from(&[
        ("PREFORK_MAX_REQUESTS", "1000"),
        ("PREFORK_MAX_REQUESTS_JITTER", "50"),
    ]);
    assert!(s.error().is_none());
    assert_eq!(
        (s.max_requests(), s.max_requests_jitter()),
        (Some(1000), Some(50))
    );
    assert_eq!(
        from(&[("PREFORK_MAX_REQUESTS", "0")]).max_requests(),
        Some(0)
    );
    refused("PREFORK_MAX_REQUESTS", "-1");
    refused("PREFORK_MAX_REQUESTS", "lots");
    // A jitter without max_requests recycles nothing: refused by its name.
    let e = from(&[("PREFORK_MAX_REQUESTS_JITTER", "50")])
        .error()
        .unwrap()
        .clone();
    assert_eq!(e.field, "PREFORK_MAX_REQUESTS_JITTER");
    assert!(e.allowed.contains("PREFORK_MAX_REQUESTS > 0"), "{e}");
    let s = from(&[
        ("PREFORK_MAX_REQUESTS", "0"),
        ("PREFORK_MAX_REQUESTS_JITTER", "0"),
    ]);
    assert!(s.error().is_none());
}

#[test]
fn forwarded_allow_ips_are_ips_blocks_or_a_star() {
    let s = from(&[(
        "PREFORK_FORWARDED_ALLOW_IPS",
        "10.0.0.0/8, 192.168.1.1,::1,fd00::/8",
    )]);
    assert_eq!(
        s.forwarded_allow_ips().unwrap(),
        ["10.0.0.0/8", "192.168.1.1", "::1", "fd00::/8"]
    );
    assert_eq!(
        from(&[("PREFORK_FORWARDED_ALLOW_IPS", "*")])
            .forwarded_allow_ips()
            .unwrap(),
        ["*"]
    );
    // Empty: no proxy is believed (as gunicorn).
    let none = from(&[("PREFORK_FORWARDED_ALLOW_IPS", "")]);
    assert!(none.error().is_none());
    assert!(none.forwarded_allow_ips().unwrap().is_empty());
    for bad in ["nginx", "10.0.0.0/33", "::1/129", "10.0.0.0/x"] {
        refused("PREFORK_FORWARDED_ALLOW_IPS", bad);
    }
}

#[test]
fn log_files_and_level_are_carried() {
    let s = from(&[
        ("PREFORK_ACCESS_LOG", "-"),
        ("PREFORK_ERROR_LOG", "/var/log/app/error.log"),
        ("PREFORK_LOG_LEVEL", "WARNING"),
    ]);
    assert_eq!(s.access_log(), Some("-"));
    assert_eq!(s.error_log(), Some("/var/log/app/error.log"));
    assert_eq!(s.log_level(), Some(log::LevelFilter::Warn));
    assert_eq!(
        from(&[("PREFORK_LOG_LEVEL", "critical")]).log_level(),
        Some(log::LevelFilter::Error)
    );
    refused("PREFORK_ACCESS_LOG", "");
    refused("PREFORK_ERROR_LOG", " ");
    let e = refused("PREFORK_LOG_LEVEL", "loud");
    assert!(e.allowed.contains("warning"), "{e}");
}

#[test]
fn the_first_refusal_is_kept_and_check_returns_it() {
    let s = from(&[("PORT", "x"), ("PREFORK_THREADS", "0")]);
    assert_eq!(s.check().unwrap_err().field, "PORT");
    assert!(from(&[("PORT", "80")]).check().is_ok());
}

#[test]
fn every_variable_read_is_listed() {
    let seen = std::cell::RefCell::new(Vec::new());
    Settings::from_lookup(|name| {
        seen.borrow_mut().push(name.to_string());
        None
    });
    let mut seen = seen.into_inner();
    seen.sort();
    let mut listed: Vec<String> = VARIABLES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(seen, listed);
}

#[test]
fn render_aligns_and_names_the_source() {
    let text = render(&[
        ("bind", "0.0.0.0:8080".into(), Source::Env("PORT")),
        ("threads", "2".into(), Source::Code),
        (
            "timeout",
            show_duration(Duration::from_millis(1500)),
            Source::Default,
        ),
    ]);
    assert_eq!(
        text,
        "bind    = 0.0.0.0:8080  (environment PORT)\n\
         threads = 2             (code)\n\
         timeout = 1.5s          (default)\n"
    );
    assert_eq!(show_duration(Duration::from_millis(500)), "500ms");
    assert_eq!(show_duration(Duration::from_secs(30)), "30s");
}

#[test]
fn user_and_group_are_names_or_ids() {
    let s = from(&[("PREFORK_USER", "www-data"), ("PREFORK_GROUP", "33")]);
    assert!(s.error().is_none());
    assert_eq!((s.user(), s.group()), (Some("www-data"), Some("33")));
    for bad in ["", " ", "www data", "root:root"] {
        let e = refused("PREFORK_USER", bad);
        assert!(e.allowed.contains("user name or a numeric uid"), "{e}");
        let e = refused("PREFORK_GROUP", bad);
        assert!(e.allowed.contains("group name or a numeric gid"), "{e}");
    }
}

#[test]
fn worker_memory_takes_binary_units_and_refuses_the_rest() {
    let mib = 1u64 << 20;
    for (text, bytes) in [
        ("200M", 200 * mib),
        ("200MiB", 200 * mib),
        ("200MB", 200 * mib),
        ("1G", 1024 * mib),
        ("1.5g", 1536 * mib),
        ("4096K", 4 * mib),
        ("1048576", mib),
        ("0", 0),
    ] {
        let s = from(&[("PREFORK_MAX_WORKER_MEMORY", text)]);
        assert_eq!(s.max_worker_memory(), Some(bytes), "{text}");
    }
    for bad in ["", "lots", "-5M", "100", "512K", "2T", "1X", "1e400"] {
        let e = refused("PREFORK_MAX_WORKER_MEMORY", bad);
        assert!(e.allowed.contains("1M..=1T"), "{e}");
    }
    assert_eq!(show_bytes(200 * mib), "200M");
    assert_eq!(show_bytes(1536 * mib), "1536M");
    assert_eq!(show_bytes(1 << 30), "1G");
    assert_eq!(show_bytes(1000), "1000");
}

#[test]
fn worker_age_is_a_duration_from_a_second_to_thirty_days() {
    let s = from(&[("PREFORK_MAX_WORKER_AGE", "1h")]);
    assert_eq!(s.max_worker_age(), Some(Duration::from_secs(3600)));
    let s = from(&[("PREFORK_MAX_WORKER_AGE", "3600s")]);
    assert_eq!(s.max_worker_age(), Some(Duration::from_secs(3600)));
    assert_eq!(
        from(&[("PREFORK_MAX_WORKER_AGE", "720h")]).max_worker_age(),
        Some(MAX_AGE)
    );
    for bad in ["0", "500ms", "721h", "soon", "-1h"] {
        let e = refused("PREFORK_MAX_WORKER_AGE", bad);
        assert!(e.allowed.contains("1s..=720h (30 days)"), "{e}");
    }
}

#[test]
fn process_mode_variables_are_listed_for_thread_mode_to_refuse() {
    let s = from(&[
        ("PREFORK_USER", "nobody"),
        ("PREFORK_GROUP", "nogroup"),
        ("PREFORK_MAX_WORKER_MEMORY", "200M"),
        ("PREFORK_MAX_WORKER_AGE", "1h"),
    ]);
    let vars: Vec<&str> = s.process_mode_only().iter().map(|(v, _)| *v).collect();
    assert_eq!(vars, PROCESS_MODE_VARIABLES);
    assert!(from(&[("PORT", "1")]).process_mode_only().is_empty());
}

#[cfg(feature = "tls")]
#[test]
fn tls_files_are_paths_and_an_empty_one_is_refused() {
    let s = Settings::from_lookup(|name| match name {
        "PREFORK_CERTFILE" => Some("/etc/app/cert.pem".into()),
        "PREFORK_KEYFILE" => Some("/etc/app/key.pem".into()),
        _ => None,
    });
    assert!(s.error().is_none());
    assert_eq!(
        s.certfile(),
        Some(std::path::Path::new("/etc/app/cert.pem"))
    );
    assert_eq!(s.keyfile(), Some(std::path::Path::new("/etc/app/key.pem")));
    let bad = Settings::from_lookup(|name| (name == "PREFORK_KEYFILE").then(|| " ".into()));
    assert_eq!(
        bad.error().unwrap().to_string(),
        r#"invalid `PREFORK_KEYFILE` = " ": the path of a PEM file"#
    );
}

#[cfg(not(feature = "tls"))]
#[test]
fn tls_files_are_refused_by_name_without_the_feature() {
    let s = Settings::from_lookup(|name| (name == "PREFORK_CERTFILE").then(|| "c.pem".into()));
    let e = s.error().unwrap().to_string();
    assert!(e.starts_with(r#"invalid `PREFORK_CERTFILE` = "c.pem": unset: this program was built without prefork-pool's `tls` feature"#), "{e}");
    assert!(e.contains("deploy/nginx"), "{e}");
}
