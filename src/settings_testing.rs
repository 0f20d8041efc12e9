//! What the settings tests of both modes (`http/settings.rs`, `prefork/settings.rs`) share.

use super::Settings;

/// Settings read from `vars` instead of the process's environment.
pub(crate) fn env(vars: &'static [(&'static str, &'static str)]) -> Settings {
    Settings::from_lookup(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    })
}

/// The TLS variables set to two files (which do not exist).
#[cfg(feature = "tls")]
pub(crate) const TLS_ENV: &[(&str, &str)] = &[
    ("PREFORK_CERTFILE", "/etc/app/cert.pem"),
    ("PREFORK_KEYFILE", "/etc/app/key.pem"),
];

/// `text` (a `print_config`) shows the files of [`TLS_ENV`], each as set by its variable.
#[cfg(feature = "tls")]
pub(crate) fn assert_tls_files_from_env(text: &str) {
    for (name, value, var) in [
        ("certfile", "/etc/app/cert.pem", "PREFORK_CERTFILE"),
        ("keyfile", "/etc/app/key.pem", "PREFORK_KEYFILE"),
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{name} "))
                && l.contains(&format!("= {value} "))
                && l.ends_with(&format!("(environment {var})"))),
            "{name} in\n{text}"
        );
    }
}
