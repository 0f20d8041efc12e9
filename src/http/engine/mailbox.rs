//! [`Mailbox`]: a value that one thread at a time works on (a connection's state machine, in the
//! lane's `ConnCell`), and a mailbox beside it that any thread may write to without waiting for the
//! value: a message (the cell's answer slot, holding the connection's `Answer`), and event bits
//! (what the connection's socket said: readable, writable) that merge.
//!
//! The rule: a message posted is applied exactly once, and never left in the mailbox once every
//! thread has let go; an event signalled is taken by a thread holding the value after the signal,
//! unless the value does not want it yet (then it stays until it does). The writer tries to take
//! the value and acts itself; if another thread holds the value, that thread looks at the mailbox
//! again after letting go, and goes round while a message, or an event the value wants, is there
//! and nobody else took the value. Its locks go through `crate::sync`, and loom models check the
//! rule (`.ci/run`).

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};

use crate::sync::{fence, AtomicBool, AtomicU32, Mutex};

/// What a [`Mailbox::visit`] step says comes after it lets go of the value.
pub(crate) enum Step {
    /// Stop: no look at the mailbox (the value was taken out, or the step is done for good).
    Stop,
    /// Look at the mailbox: a message there, or an event the value wants, runs the step again.
    LetGo,
}

/// A value worked on by one thread at a time, and its mailbox: a message, the events signalled
/// and not taken yet, and which events the value wants now (set by the holder with
/// [`Mailbox::settle`]).
///
/// The mailbox is atomics, not a lock: a kept-alive request visits it twice (its bytes, its
/// answer), and each locked instruction costs some 10-20 ns on a VM even uncontended. The rule
/// holds by a store-buffer pairing: a writer records (an atomic read-modify-write), then fences
/// and tries the value's lock; a holder lets go of the lock, fences, then looks at the mailbox.
/// Either the writer's try finds the value free, or the holder's look finds what was recorded.
pub(crate) struct Mailbox<C, M> {
    held: Mutex<Option<C>>,
    /// The events signalled and not taken yet (bits, merged).
    events: AtomicU32,
    /// The events the value wants now: written holding the value, read by a thread that held it.
    wants: AtomicU32,
    /// Whether `message` holds one (written with it, under its lock; read without).
    has_mail: AtomicBool,
    message: Mutex<Option<M>>,
    /// Under loom, a point where the holder may be preempted after its step, before it lets go:
    /// loom switches threads at a lock, never at an unlock, so without it no model thread could
    /// write to the mailbox and meet the value held (`try_lock` failing) after the holder's last
    /// look, the very race `visit` answers.
    #[cfg(loom)]
    letting_go: crate::sync::AtomicUsize,
}

impl<C, M> Mailbox<C, M> {
    /// A value wanting the events `wants` until a holder [settles](Self::settle) (so that an
    /// event that meets a [peek](Self::peek) before any step ran is seen by it).
    pub(crate) fn new(value: C, wants: u32) -> Self {
        Mailbox {
            held: Mutex::new(Some(value)),
            events: AtomicU32::new(0),
            wants: AtomicU32::new(wants),
            has_mail: AtomicBool::new(false),
            message: Mutex::new(None),
            #[cfg(loom)]
            letting_go: crate::sync::AtomicUsize::new(0),
        }
    }

    /// Leave `message` in the mailbox; follow with [`visit`](Self::visit) (without waiting) so
    /// that it is applied now if nobody holds the value.
    pub(crate) fn post(&self, message: M) {
        {
            let mut slot = self.message.lock();
            *slot = Some(message);
            self.has_mail.store(true, SeqCst);
        }
        self.after_recording();
    }

    /// Record `events` (bits, merged with those not taken yet); follow with
    /// [`visit`](Self::visit) (without waiting) so that they are taken now if nobody holds the
    /// value: otherwise its holder takes them after letting go, if it wants them.
    pub(crate) fn signal(&self, events: u32) {
        self.events.fetch_or(events, SeqCst);
        self.after_recording();
    }

    /// The message, taken (a step looks while it holds the value).
    pub(crate) fn take_mail(&self) -> Option<M> {
        if !self.has_mail.load(SeqCst) {
            return None;
        }
        let mut slot = self.message.lock();
        self.has_mail.store(false, SeqCst);
        slot.take()
    }

    /// Say (holding the value) which events it wants now, and take those of them that were
    /// signalled: the step acts on them, and settles again. Events it does not want stay (and a
    /// later settle that wants them takes them).
    pub(crate) fn settle(&self, wants: u32) -> u32 {
        // Read only by threads that held the value after this one (the lock orders them).
        if self.wants.load(Relaxed) != wants {
            self.wants.store(wants, Release);
        }
        // Nothing wanted came: no write (one that comes now is seen after letting go).
        if self.events.load(SeqCst) & wants == 0 {
            return 0;
        }
        self.events.fetch_and(!wants, SeqCst) & wants
    }

    /// Whether a message, or an event the value wants, waits in the mailbox (looked at after
    /// letting go, past the fence in `let_go`).
    fn pending(&self) -> bool {
        self.has_mail.load(SeqCst) || self.events.load(SeqCst) & self.wants.load(Acquire) != 0
    }

    /// The writer's side of the pairing: what it recorded is ordered before its try of the lock.
    #[inline]
    fn after_recording(&self) {
        fence(SeqCst);
    }

    /// The holder's side: let go of the value, then order that before the look at the mailbox.
    #[inline]
    fn let_go(&self, held: impl Sized) {
        self.before_letting_go();
        drop(held);
        fence(SeqCst);
    }

    /// Run `step` with the value held (`None` once it was taken out: closed). `wait`: block for
    /// the value; otherwise give up at once when another thread holds it (that thread will see
    /// the mailbox). What `step` returns says whether to look at the mailbox after letting go
    /// ([`Step`]); a message, or an event the value wants, found there runs `step` again
    /// (without waiting), unless another thread took the value meanwhile.
    #[inline]
    pub(crate) fn visit(&self, mut wait: bool, mut step: impl FnMut(&mut Option<C>) -> Step) {
        loop {
            let mut held = if wait {
                self.held.lock()
            } else {
                match self.held.try_lock() {
                    Some(held) => held,
                    None => return,
                }
            };
            let next = step(&mut held);
            self.let_go(held);
            if let Step::Stop = next {
                return;
            }
            wait = false;
            if !self.pending() {
                return;
            }
            // Mail, or an event, came while we held the value: go round (unless another thread
            // took it).
        }
    }

    /// Take the value out for good (closing it), waiting for whoever holds it.
    pub(crate) fn take(&self) -> Option<C> {
        self.held.lock().take()
    }

    /// Whether a message waits in the mailbox.
    #[cfg(test)]
    pub(crate) fn has_mail(&self) -> bool {
        self.message.lock().is_some()
    }

    /// The value, held (tests look inside).
    #[cfg(test)]
    pub(crate) fn lock_for_test(&self) -> impl std::ops::Deref<Target = Option<C>> + '_ {
        self.held.lock()
    }

    /// `f` on the value if nobody holds it now (`None` if somebody does), and whether a message,
    /// or an event the value wants, waits in the mailbox after letting go. A peek holds the value
    /// like a step: a thread that wrote to the mailbox meanwhile found it held and left, so on
    /// `true` the caller [visits](Self::visit) (without waiting) to act on what came.
    pub(crate) fn peek<R>(&self, f: impl FnOnce(Option<&C>) -> R) -> Option<(R, bool)> {
        let held = self.held.try_lock()?;
        let r = f(held.as_ref());
        self.let_go(held);
        Some((r, self.pending()))
    }

    /// Under loom, a point where the holder may be preempted before it lets go (`letting_go`).
    #[inline]
    fn before_letting_go(&self) {
        #[cfg(loom)]
        self.letting_go
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_posted_while_the_value_is_held_is_applied_by_the_holder_after_it_lets_go() {
        let mb = Mailbox::new(Vec::<u32>::new(), 0);
        let mut rounds = 0;
        mb.visit(true, |v| {
            rounds += 1;
            if rounds == 1 {
                // Another thread posts now and finds the value held: its own visit gives up.
                mb.post(7);
                mb.visit(false, |_| -> Step { unreachable!("the value is held") });
            }
            while let Some(m) = mb.take_mail() {
                v.as_mut().unwrap().push(m);
            }
            Step::LetGo
        });
        assert_eq!(rounds, 1, "the holder drained it in its step");
        assert_eq!(mb.take(), Some(vec![7]));
        assert_eq!(mb.take(), None, "taken out for good");
        assert_eq!(mb.peek(|v| v.is_none()), Some((true, false)));
    }
}

/// loom model (`RUSTFLAGS="--cfg loom" cargo test --release --lib loom`, run by `.ci/run`).
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::atomic::{AtomicU64, Ordering};
    use loom::sync::Arc;
    use loom::thread;

    /// The connection's thread steps it (waiting for the cell) while the answer is posted from
    /// another thread: the answer is applied exactly once, and nothing is left in the mailbox.
    #[test]
    fn loom_an_answer_posted_while_the_connection_is_held_is_applied_once() {
        loom::model(|| {
            let mb = Arc::new(Mailbox::<Vec<u32>, u32>::new(Vec::new(), 0));
            // As `ConnCell::with`'s step: apply what the mailbox holds, then settle (the answer
            // may come before the settle, or after it: `visit`'s `letting_go`).
            let step = |v: &mut Option<Vec<u32>>, mb: &Mailbox<Vec<u32>, u32>| {
                while let Some(m) = mb.take_mail() {
                    v.as_mut().unwrap().push(m);
                }
                mb.settle(1);
                Step::LetGo
            };
            let answerer = {
                let mb = mb.clone();
                thread::spawn(move || {
                    mb.post(1);
                    mb.visit(false, |v| step(v, &mb));
                })
            };
            mb.visit(true, |v| step(v, &mb));
            answerer.join().unwrap();
            assert!(mb.take_mail().is_none(), "an answer left in the mailbox");
            assert_eq!(mb.take(), Some(vec![1]), "applied exactly once");
        });
    }

    /// The socket's readable event, as the lane signals it.
    const IN: u32 = 1;

    /// A connection as the models see it: whether its request is in flight (it wants no input
    /// then), and the bytes read from its socket.
    struct Model {
        in_flight: bool,
        read: u64,
    }

    /// As the lane's step (`ConnCell::drive`): act on an answer in the slot (the request is no
    /// longer in flight), then settle for what the connection wants and read while an event it
    /// wants was signalled (edge-triggered: the socket is read after every event, or its bytes
    /// stay unread, as no other event comes for them).
    fn step(v: &mut Option<Model>, mb: &Mailbox<Model, ()>, sock: &AtomicU64) -> Step {
        let conn = v.as_mut().unwrap();
        while mb.take_mail().is_some() {
            conn.in_flight = false;
        }
        loop {
            let wants = if conn.in_flight { 0 } else { IN };
            if mb.settle(wants) == 0 {
                return Step::LetGo;
            }
            assert!(
                !conn.in_flight,
                "an event acted on while the request is in flight"
            );
            conn.read += sock.swap(0, Ordering::SeqCst);
        }
    }

    /// Bytes arrive (a new edge) while a thread holds the connection, at every point of its
    /// step and its let-go: the event's thread finds the cell held and gives up, and the holder
    /// (or the event's thread, when it finds the cell free) reads them. Nothing is left unread.
    #[test]
    fn loom_an_event_that_comes_while_the_connection_is_held_is_never_lost() {
        loom::model(|| {
            let mb = Arc::new(Mailbox::<Model, ()>::new(
                Model {
                    in_flight: false,
                    read: 0,
                },
                IN,
            ));
            let sock = Arc::new(AtomicU64::new(1));
            mb.signal(IN);
            let edge = {
                let (mb, sock) = (mb.clone(), sock.clone());
                thread::spawn(move || {
                    sock.fetch_add(1, Ordering::SeqCst);
                    mb.signal(IN);
                    mb.visit(false, |v| step(v, &mb, &sock));
                })
            };
            mb.visit(false, |v| step(v, &mb, &sock));
            edge.join().unwrap();
            assert_eq!(sock.load(Ordering::SeqCst), 0, "bytes left unread");
            assert_eq!(mb.take().unwrap().read, 2);
        });
    }

    /// Bytes arrive while the request is in flight (nothing reads them then: answers go out in
    /// order) as the answer comes back: the event is kept until the connection wants input
    /// again, and then read, by whichever thread holds the connection last.
    #[test]
    fn loom_an_event_that_comes_while_the_request_is_in_flight_is_read_after_its_answer() {
        loom::model(|| {
            let mb = Arc::new(Mailbox::<Model, ()>::new(
                Model {
                    in_flight: true,
                    read: 0,
                },
                0,
            ));
            let sock = Arc::new(AtomicU64::new(0));
            let edge = {
                let (mb, sock) = (mb.clone(), sock.clone());
                thread::spawn(move || {
                    sock.fetch_add(1, Ordering::SeqCst);
                    mb.signal(IN);
                    mb.visit(false, |v| step(v, &mb, &sock));
                })
            };
            mb.post(());
            mb.visit(false, |v| step(v, &mb, &sock));
            edge.join().unwrap();
            assert_eq!(sock.load(Ordering::SeqCst), 0, "bytes left unread");
            let conn = mb.take().unwrap();
            assert!(!conn.in_flight, "the answer was not acted on");
            assert_eq!(conn.read, 1);
        });
    }

    /// Bytes arrive while the reactor peeks at the connection (its timer, the drain's count):
    /// the event's thread finds the cell held and gives up, so the peek looks at the mailbox
    /// after letting go and its caller goes round. Nothing is left unread.
    #[test]
    fn loom_an_event_that_comes_while_the_connection_is_peeked_at_is_never_lost() {
        loom::model(|| {
            let mb = Arc::new(Mailbox::<Model, ()>::new(
                Model {
                    in_flight: false,
                    read: 0,
                },
                IN,
            ));
            let sock = Arc::new(AtomicU64::new(0));
            let edge = {
                let (mb, sock) = (mb.clone(), sock.clone());
                thread::spawn(move || {
                    sock.fetch_add(1, Ordering::SeqCst);
                    mb.signal(IN);
                    mb.visit(false, |v| step(v, &mb, &sock));
                })
            };
            if let Some(((), true)) = mb.peek(|_| ()) {
                mb.visit(false, |v| step(v, &mb, &sock));
            }
            edge.join().unwrap();
            assert_eq!(sock.load(Ordering::SeqCst), 0, "bytes left unread");
            assert_eq!(mb.take().unwrap().read, 1);
        });
    }
}
