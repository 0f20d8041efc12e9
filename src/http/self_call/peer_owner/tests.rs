//! Tests of the peer-owner lookup against real sockets: in-process connections (IPv4, IPv6,
//! v4-mapped), a python3 child process as the other client, and the skip set.

use super::*;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// Finds python3, or skips (see the file's docs): shared with the test binaries.
#[path = "../../../../tests/support/tools.rs"]
mod tools;

fn diag() -> SockDiag {
    SockDiag::open(SockDiag::DEFAULT_TIMEOUT).expect("NETLINK_SOCK_DIAG socket")
}

fn inode_of(s: &impl AsRawFd) -> u64 {
    socket_inode(s.as_raw_fd()).expect("a socket")
}

/// A connection made in this process: (listener, client end, accepted end, peer address).
fn pair(bind: &str, connect: Option<&str>) -> Option<(TcpListener, TcpStream, TcpStream)> {
    let l = match TcpListener::bind(bind) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("skipped: cannot bind {bind}: {e}");
            return None;
        }
    };
    let port = l.local_addr().unwrap().port();
    let to = connect.map_or_else(
        || l.local_addr().unwrap(),
        |ip| SocketAddr::new(ip.parse().unwrap(), port),
    );
    let c = TcpStream::connect(to).unwrap();
    let (s, peer) = l.accept().unwrap();
    assert_eq!(s.peer_addr().unwrap(), peer);
    Some((l, c, s))
}

/// The lookup by the accepted end's (peer, local) finds exactly the client end, and the
/// reverse 4-tuple finds the accepted end: the direction of `id` is right.
fn assert_finds_client(l: &TcpListener, c: &TcpStream, s: &TcpStream) {
    let (peer, local) = (s.peer_addr().unwrap(), s.local_addr().unwrap());
    let mut d = diag();
    let found = d
        .client_socket(peer, local)
        .unwrap()
        .expect("the client socket");
    assert_eq!(found.inode, inode_of(c));
    // SAFETY: geteuid(2) cannot fail.
    assert_eq!(found.uid, unsafe { libc::geteuid() });
    let server_end = d
        .client_socket(local, peer)
        .unwrap()
        .expect("the accepted socket");
    assert_eq!(server_end.inode, inode_of(s));
    let ours: HashSet<RawFd> = [l.as_raw_fd(), s.as_raw_fd()].into();
    assert_eq!(
        d.owner(peer, local, &[], 0, |fd| ours.contains(&fd)),
        Owner::ThisProcess
    );
}

#[test]
fn finds_the_client_end_of_an_ipv4_connection() {
    let (l, c, s) = pair("127.0.0.1:0", None).unwrap();
    assert_finds_client(&l, &c, &s);
}

#[test]
fn finds_the_client_end_of_an_ipv6_connection() {
    if let Some((l, c, s)) = pair("[::1]:0", None) {
        assert!(s.peer_addr().unwrap().is_ipv6());
        assert_finds_client(&l, &c, &s);
    }
}

#[test]
fn finds_the_client_end_through_v4_mapped_addresses() {
    // A dual-stack listener sees an IPv4 client as ::ffff:127.0.0.1.
    if let Some((l, c, s)) = pair("[::]:0", Some("127.0.0.1")) {
        let peer = s.peer_addr().unwrap();
        assert!(matches!(peer.ip(), IpAddr::V6(a) if a.to_ipv4_mapped().is_some()));
        assert_finds_client(&l, &c, &s);
    }
    // An IPv6 client socket connected to a v4-mapped address of an IPv4 listener.
    if let Some((l, c, s)) = pair("127.0.0.1:0", Some("::ffff:127.0.0.1")) {
        assert_finds_client(&l, &c, &s);
    }
}

#[test]
fn a_connection_that_does_not_exist_is_not_found() {
    let (l, _c, s) = pair("127.0.0.1:0", None).unwrap();
    let local = s.local_addr().unwrap();
    let mut d = diag();
    let nowhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
    assert_eq!(d.client_socket(nowhere, local).unwrap(), None);
    assert_eq!(d.owner(nowhere, local, &[], 0, |_| false), Owner::Other);
    // The kernel's lookup falls back to a listener on the source address: not a client.
    assert_eq!(
        d.client_socket(l.local_addr().unwrap(), nowhere).unwrap(),
        None
    );
    // The socket stays usable after a negative answer.
    assert!(d
        .client_socket(s.peer_addr().unwrap(), local)
        .unwrap()
        .is_some());
}

#[test]
fn skipped_descriptors_are_not_looked_at() {
    let (l, c, s) = pair("127.0.0.1:0", None).unwrap();
    let (peer, local) = (s.peer_addr().unwrap(), s.local_addr().unwrap());
    let skipped: HashSet<RawFd> = [l.as_raw_fd(), s.as_raw_fd(), c.as_raw_fd()].into();
    let mut asked = Vec::new();
    let owner = diag().owner(peer, local, &[], 0, |fd| {
        asked.push(fd);
        skipped.contains(&fd)
    });
    assert_eq!(owner, Owner::Other);
    assert!(asked.contains(&c.as_raw_fd()));
    let distinct: HashSet<RawFd> = asked.iter().copied().collect();
    assert_eq!(distinct.len(), asked.len(), "skip asked twice for one fd");
}

/// A child process holding a connection to `port` until it is dropped (killed and reaped).
struct Client(Child);

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a python3 child that opens `n` connections to 127.0.0.1:`port` and holds them
/// until its stdin closes; returns once they are all made (`None`: no python3 here, skipped).
fn spawn_client(port: u16, n: usize, uid: Option<u32>) -> Option<Client> {
    const SCRIPT: &str = "import socket,sys\n\
        s=[socket.create_connection(('127.0.0.1',int(sys.argv[1]))) for _ in range(int(sys.argv[2]))]\n\
        print('connected',flush=True)\n\
        sys.stdin.read()\n";
    let python = match uid {
        None => tools::require(&tools::PYTHON3)?,
        // One that `uid` can run: not pyenv's, say, under root's home (mode 700).
        Some(_) => {
            let Some(p) = tools::candidates("python3").find(|p| others_can_run(p)) else {
                let what = "python3 runnable by another user";
                tools::skip(what, "apt-get install python3").unwrap_or_else(|e| panic!("{e}"));
                return None;
            };
            p
        }
    };
    let mut cmd = Command::new(python);
    cmd.args(["-c", SCRIPT, &port.to_string(), &n.to_string()])
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let mut child = Client(cmd.spawn().expect("start python3"));
    let mut line = String::new();
    let out = child.0.stdout.take().unwrap();
    BufReader::new(out).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "connected", "the python3 client failed");
    Some(child)
}

/// Whether any user can run `p`: the file and every directory above it (links resolved) are
/// executable by others.
fn others_can_run(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Ok(real) = p.canonicalize() else {
        return false;
    };
    real.ancestors()
        .all(|a| std::fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

#[test]
fn a_connection_from_another_process_is_not_ours_unless_it_is_a_sibling() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let Some(mut child) = spawn_client(l.local_addr().unwrap().port(), 1, None) else {
        return;
    };
    let (s, peer) = l.accept().unwrap();
    let local = s.local_addr().unwrap();
    let mut d = diag();
    let ours: HashSet<RawFd> = [l.as_raw_fd(), s.as_raw_fd()].into();
    assert_eq!(
        d.owner(peer, local, &[], 0, |fd| ours.contains(&fd)),
        Owner::Other
    );
    let pid = child.0.id();
    assert_eq!(
        d.owner(peer, local, &[std::process::id(), 0, pid], 0, |fd| ours
            .contains(&fd)),
        Owner::Sibling(pid)
    );
    child.0.stdin.take().unwrap().write_all(b"").unwrap();
    assert!(child.0.wait().unwrap().success());
}

#[test]
fn another_uid_is_not_ours_without_a_scan() {
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to start a client under another uid");
        return;
    }
    let nobody = 65534;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let Some(child) = spawn_client(l.local_addr().unwrap().port(), 1, Some(nobody)) else {
        return;
    };
    let (s, peer) = l.accept().unwrap();
    let local = s.local_addr().unwrap();
    let mut d = diag();
    let sock = d.client_socket(peer, local).unwrap().unwrap();
    assert_eq!(sock.uid, nobody);
    let mut asked = 0;
    assert_eq!(
        socket_owner(sock, &[], 0, |_| {
            asked += 1;
            false
        }),
        Owner::Other
    );
    assert_eq!(asked, 0, "this process's descriptors were searched");
    // A sibling under that uid is searched.
    let pid = child.0.id();
    assert_eq!(
        socket_owner(sock, &[pid], 0, |_| false),
        Owner::Sibling(pid)
    );
}

/// The cost of one lookup with `idle` idle connections from another process, their accepted
/// ends held here and skipped, against the former path (read `/proc/self/net/tcp`, then
/// `readlink` every entry of `/proc/self/fd`). Run with
/// `cargo test --release --all-features --lib peer_owner::tests::cost -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn cost_with_idle_connections() {
    for idle in [0, 4000] {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let accepting = std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            for _ in 0..idle + 1 {
                held.push(l.accept().unwrap().0);
            }
            (l, held)
        });
        let Some(_other) = spawn_client(port, idle + 1, None) else {
            return;
        };
        let (l, mut held) = accepting.join().unwrap();
        let other = held.pop().unwrap();
        let (_c, mine) = {
            let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            (c, l.accept().unwrap().0)
        };
        let mut ours: HashSet<RawFd> = held.iter().map(|s| s.as_raw_fd()).collect();
        ours.extend([l.as_raw_fd(), other.as_raw_fd(), mine.as_raw_fd()]);
        let mut d = diag();
        let runs = 200;
        let time = |f: &mut dyn FnMut()| {
            let t = std::time::Instant::now();
            for _ in 0..runs {
                f();
            }
            t.elapsed() / runs
        };
        let addrs = |s: &TcpStream| (s.peer_addr().unwrap(), s.local_addr().unwrap());
        let (op, ol) = addrs(&other);
        let (mp, ml) = addrs(&mine);
        let client = d.client_socket(op, ol).unwrap().unwrap().inode;
        let query = time(&mut || assert!(d.client_socket(op, ol).unwrap().is_some()));
        let not_ours = time(&mut || {
            assert_eq!(
                d.owner(op, ol, &[], 0, |fd| ours.contains(&fd)),
                Owner::Other
            );
        });
        let owned = OwnedFds::default();
        ours.iter().for_each(|fd| owned.insert(*fd));
        let bitmap = time(&mut || {
            assert_eq!(
                d.owner(op, ol, &[], owned.highest(), |fd| owned.contains(fd)),
                Owner::Other
            );
        });
        let self_call = time(&mut || {
            assert_eq!(
                d.owner(mp, ml, &[], 0, |fd| ours.contains(&fd)),
                Owner::ThisProcess
            );
        });
        let no_skip = time(&mut || {
            assert_eq!(d.owner(op, ol, &[], 0, |_| false), Owner::Other);
        });
        let former = time(&mut || {
            let table = std::fs::read_to_string("/proc/self/net/tcp").unwrap();
            assert!(table.lines().count() > idle);
            let want = format!("socket:[{client}]");
            let found = std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .flatten()
                .any(|e| {
                    std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == want.as_str())
                });
            assert!(!found);
        });
        println!(
            "{idle} idle connections: sock_diag query {query:?}; owner, not ours {not_ours:?} \
             (skipping by the reactor's bitmap: {bitmap:?}); \
             owner, self-call {self_call:?}; owner, nothing skipped {no_skip:?}; \
             former path {former:?}"
        );
    }
}
