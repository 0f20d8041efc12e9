//! The user and group the worker processes run as (`SupervisorBuilder::user` / `group`,
//! `PREFORK_USER` / `PREFORK_GROUP`): looked up in the master when it is built (refused by name
//! when it is not root or the account does not exist), switched to in each worker right after the
//! fork, after the listeners were bound and before any of the app's code runs.
//!
//! The switch: the supplementary groups (`initgroups(3)` for a user with a passwd entry, else
//! just the group), then `setgid(2)`, then `setuid(2)` (in this order: once the uid is not root,
//! the group can no longer change), then a check that the ids took. The kernel then makes the
//! process non-dumpable and clears its `PR_SET_PDEATHSIG`: the worker sets both back
//! (`worker.rs` sets the death signal after this switch). Dumpable, its `/proc/<pid>/fd` stays
//! readable by its sibling workers (same user), which is how a sibling's call to its own service
//! is recognised, and SIGABRT can dump core; the price is that any other process of that user may
//! read its memory (ptrace, within Yama's `ptrace_scope`): give the workers an account of their
//! own rather than one shared with other daemons.

use std::ffi::{CStr, CString};
use std::io;

use libc::{gid_t, uid_t};

/// The ids to switch to, resolved in the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunAs {
    pub(crate) uid: Option<uid_t>,
    pub(crate) gid: gid_t,
    /// The user's name, for `initgroups(3)` (`None`: a group only, or a numeric uid without a
    /// passwd entry: the supplementary groups are just `gid`).
    pub(crate) user_name: Option<CString>,
    /// `nobody (uid 65534), group nogroup (gid 65534)`, for the logs and `print_config`.
    pub(crate) shown: String,
}

/// Why a user or group was refused: which setting (`user`, `group`, or the variable that set
/// it) is named by the caller; this is the value's part of the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// `true`: the user is at fault, `false`: the group.
    pub(crate) user: bool,
    pub(crate) allowed: String,
}

/// An account from `getpwnam_r` / `getpwuid_r`.
struct Passwd {
    name: CString,
    uid: uid_t,
    gid: gid_t,
}

/// The passwd entry of `name`, or of the uid it spells; `Ok(None)` when there is none.
fn passwd(name_or_id: &str) -> io::Result<Option<Passwd>> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: an all-zero `passwd` is a valid value of this plain C struct (null pointers, zero
    // ids); it is only read after getpw*_r filled it.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let rc = if let Ok(uid) = name_or_id.parse::<uid_t>() {
        // SAFETY: getpwuid_r(3) with valid pointers to a local struct, a buffer of the given
        // length and the result pointer; it writes only into them.
        unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) }
    } else {
        let c = CString::new(name_or_id).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: as above, with a NUL-terminated name.
        unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) }
    };
    if found.is_null() {
        // 0 (or ENOENT, ESRCH, EBADF, EPERM, as the man page allows): no such entry.
        return match rc {
            0 | libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => Ok(None),
            e => Err(io::Error::from_raw_os_error(e)),
        };
    }
    // SAFETY: getpw*_r succeeded: `pw.pw_name` points to a NUL-terminated string in `buf`, alive
    // here.
    let name = unsafe { CStr::from_ptr(pw.pw_name) }.to_owned();
    Ok(Some(Passwd {
        name,
        uid: pw.pw_uid,
        gid: pw.pw_gid,
    }))
}

/// The gid and name of the group `name_or_id`; `Ok(None)` when there is no such group (a numeric
/// id without an entry is taken as it is, named by its number).
fn group(name_or_id: &str) -> io::Result<Option<(gid_t, String)>> {
    let mut buf = vec![0 as libc::c_char; 64 * 1024];
    // SAFETY: an all-zero `group` is a valid value of this plain C struct; read only once filled.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    let numeric = name_or_id.parse::<gid_t>().ok();
    let rc = if let Some(gid) = numeric {
        // SAFETY: getgrgid_r(3) with valid pointers to a local struct, a buffer of the given
        // length and the result pointer.
        unsafe { libc::getgrgid_r(gid, &mut gr, buf.as_mut_ptr(), buf.len(), &mut found) }
    } else {
        let c = CString::new(name_or_id).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: as above, with a NUL-terminated name.
        unsafe { libc::getgrnam_r(c.as_ptr(), &mut gr, buf.as_mut_ptr(), buf.len(), &mut found) }
    };
    if found.is_null() {
        return match (rc, numeric) {
            (0 | libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM, Some(gid)) => {
                Ok(Some((gid, gid.to_string())))
            }
            (0 | libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM, None) => Ok(None),
            (e, _) => Err(io::Error::from_raw_os_error(e)),
        };
    }
    // SAFETY: getgr*_r succeeded: `gr.gr_name` points to a NUL-terminated string in `buf`.
    let name = unsafe { CStr::from_ptr(gr.gr_name) }
        .to_string_lossy()
        .into_owned();
    Ok(Some((gr.gr_gid, name)))
}

/// This process's effective uid and gid.
pub(crate) fn current_ids() -> (uid_t, gid_t) {
    // SAFETY: geteuid(2) and getegid(2) cannot fail and touch no memory.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// Resolves `user` and `group` (names or numeric ids) as this process (`euid`) may switch to
/// them. `Ok(None)`: nothing to switch (neither is set, or the process already runs as them).
/// A numeric uid without a passwd entry is taken as it is, and then needs `group`.
pub(crate) fn resolve(
    user: Option<&str>,
    grp: Option<&str>,
    (euid, egid): (uid_t, gid_t),
) -> Result<Option<RunAs>, Refusal> {
    if user.is_none() && grp.is_none() {
        return Ok(None);
    }
    let lookup = |e: io::Error| e.to_string();
    let account = match user {
        None => None,
        Some(u) => match passwd(u).map_err(lookup) {
            Ok(Some(p)) => Some(p),
            Ok(None) => match u.parse::<uid_t>() {
                Ok(uid) if grp.is_some() => Some(Passwd {
                    name: CString::default(),
                    uid,
                    gid: egid,
                }),
                Ok(_) => {
                    return Err(Refusal {
                        user: true,
                        allowed: "a uid without a passwd entry needs `group` (PREFORK_GROUP) \
                                  too: set it, or name an existing user"
                            .into(),
                    })
                }
                Err(_) => {
                    return Err(Refusal {
                        user: true,
                        allowed: "an existing user: there is no such user on this system \
                                  (`getent passwd NAME` lists it; create it, or name another)"
                            .into(),
                    })
                }
            },
            Err(e) => {
                return Err(Refusal {
                    user: true,
                    allowed: format!("an existing user: the user database could not be read ({e})"),
                })
            }
        },
    };
    let (gid, group_name) = match grp {
        Some(g) => match group(g) {
            Ok(Some(found)) => found,
            Ok(None) => {
                return Err(Refusal {
                    user: false,
                    allowed: "an existing group: there is no such group on this system \
                              (`getent group NAME` lists it; create it, or name another)"
                        .into(),
                })
            }
            Err(e) => {
                return Err(Refusal {
                    user: false,
                    allowed: format!(
                        "an existing group: the group database could not be read ({e})"
                    ),
                })
            }
        },
        // The user's own group, as `su` and systemd's User= do (gunicorn keeps the master's).
        None => {
            let gid = account.as_ref().map_or(egid, |p| p.gid);
            let name = group(&gid.to_string())
                .ok()
                .flatten()
                .map_or(gid.to_string(), |(_, n)| n);
            (gid, name)
        }
    };
    let uid = account.as_ref().map(|p| p.uid);
    if uid.unwrap_or(euid) == euid && gid == egid {
        // Already them (a container started with `--user`): nothing to switch.
        return Ok(None);
    }
    if euid != 0 {
        return Err(Refusal {
            user: user.is_some(),
            allowed: format!(
                "the master running as root, to switch its workers to another account: this \
                 process runs as uid {euid}, gid {egid}. Start it as root (systemd: leave \
                 User= out and set PREFORK_USER), or leave `user` and `group` unset and start \
                 it as the account it should run as"
            ),
        });
    }
    let shown = match &account {
        Some(p) if !p.name.as_bytes().is_empty() => format!(
            "{} (uid {}), group {group_name} (gid {gid})",
            p.name.to_string_lossy(),
            p.uid
        ),
        Some(p) => format!("uid {}, group {group_name} (gid {gid})", p.uid),
        None => format!("group {group_name} (gid {gid})"),
    };
    Ok(Some(RunAs {
        uid,
        gid,
        user_name: account.map(|p| p.name).filter(|n| !n.as_bytes().is_empty()),
        shown,
    }))
}

/// In a worker, right after the fork: switch to `run_as`. An error ends the worker's boot.
pub(crate) fn switch(run_as: &RunAs) -> io::Result<()> {
    let check = |rc: libc::c_int, what: &str| {
        if rc == 0 {
            Ok(())
        } else {
            let e = io::Error::last_os_error();
            Err(io::Error::new(e.kind(), format!("{what}: {e}")))
        }
    };
    match (&run_as.user_name, run_as.uid) {
        (Some(name), Some(_)) => {
            // SAFETY: initgroups(3) with a NUL-terminated name and a gid; it reads the group
            // database and sets this process's supplementary groups.
            let rc = unsafe { libc::initgroups(name.as_ptr(), run_as.gid) };
            check(rc, "initgroups")?;
        }
        _ => {
            // SAFETY: setgroups(2) with a pointer to one gid, alive for the call.
            check(unsafe { libc::setgroups(1, &run_as.gid) }, "setgroups")?;
        }
    }
    // SAFETY: setgid(2) and setuid(2) only change this process's credentials.
    check(unsafe { libc::setgid(run_as.gid) }, "setgid")?;
    if let Some(uid) = run_as.uid {
        // SAFETY: as above.
        check(unsafe { libc::setuid(uid) }, "setuid")?;
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: prctl(2) PR_SET_DUMPABLE 1 only sets a process attribute (see the module
        // documentation for why).
        let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
        check(rc, "prctl(PR_SET_DUMPABLE)")?;
    }
    let (euid, egid) = current_ids();
    if run_as.uid.is_some_and(|u| u != euid) || egid != run_as.gid {
        return Err(io::Error::other(format!(
            "the switch to {} did not take (now uid {euid}, gid {egid})",
            run_as.shown
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_set_or_already_them_is_nothing_to_switch() {
        assert_eq!(resolve(None, None, (1000, 1000)), Ok(None));
        // root's own account, for root: nothing to do (uid 0 and group 0 exist everywhere).
        assert_eq!(resolve(Some("0"), Some("0"), (0, 0)), Ok(None));
    }

    #[test]
    fn an_unknown_account_is_refused_with_how_to_find_one() {
        let e = resolve(Some("no-such-user-xq"), None, (0, 0)).unwrap_err();
        assert!(e.user && e.allowed.contains("no such user"), "{e:?}");
        let e = resolve(None, Some("no-such-group-xq"), (0, 0)).unwrap_err();
        assert!(!e.user && e.allowed.contains("no such group"), "{e:?}");
        let e = resolve(Some("4242424"), None, (0, 0)).unwrap_err();
        assert!(e.allowed.contains("needs `group`"), "{e:?}");
    }

    #[test]
    fn another_account_needs_root() {
        // uid 0 exists on every system: a non-root process cannot switch to it.
        let e = resolve(Some("0"), None, (1000, 1000)).unwrap_err();
        assert!(e.allowed.contains("runs as uid 1000"), "{e:?}");
        let run = resolve(Some("4242424"), Some("0"), (0, 0))
            .unwrap()
            .unwrap();
        assert_eq!((run.uid, run.gid, run.user_name), (Some(4242424), 0, None));
    }
}
