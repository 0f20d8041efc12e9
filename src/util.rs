//! Small helpers every layer uses: the text of a panic payload, and the `WEB_CONCURRENCY` setting.

use crate::error::BuildError;

/// The text of a panic payload: the `&str` or `String` given to `panic!`, else a placeholder.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}

/// Parses `WEB_CONCURRENCY` as gunicorn does (a whole number), given its value when it is set.
/// `None` when it is not set; a [`BuildError`] naming the variable, the value and the range when
/// it is not a whole number in 1..=`max`. `what` names what it counts ("worker threads", "worker
/// processes").
pub(crate) fn web_concurrency(
    value: Option<&str>,
    what: &str,
    max: usize,
) -> Result<Option<usize>, BuildError> {
    let Some(v) = value else { return Ok(None) };
    match v.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
        _ => Err(BuildError::new(
            "WEB_CONCURRENCY",
            format!("{v:?}"),
            format!("a whole number of {what}, 1..={max}"),
        )),
    }
}

/// `WEB_CONCURRENCY` from the environment; see [`web_concurrency`].
pub(crate) fn web_concurrency_env(what: &str, max: usize) -> Result<Option<usize>, BuildError> {
    web_concurrency(std::env::var("WEB_CONCURRENCY").ok().as_deref(), what, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_message_reads_str_and_string_payloads() {
        let p = std::panic::catch_unwind(|| panic!("boom {}", 1)).unwrap_err();
        assert_eq!(panic_message(p.as_ref()), "boom 1");
        let p = std::panic::catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_message(p.as_ref()), "plain");
        let p = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(panic_message(p.as_ref()), "<non-string panic payload>");
    }

    #[test]
    fn web_concurrency_is_parsed_or_refused_by_name() {
        assert_eq!(web_concurrency(None, "workers", 10).unwrap(), None);
        assert_eq!(
            web_concurrency(Some(" 3 "), "workers", 10).unwrap(),
            Some(3)
        );
        for bad in ["abc", "-1", "", "1.5", "0", "11"] {
            let err = web_concurrency(Some(bad), "worker threads", 10).unwrap_err();
            assert_eq!(err.field, "WEB_CONCURRENCY", "{bad}");
            assert!(err.to_string().contains("1..=10"), "{err}");
        }
    }
}
