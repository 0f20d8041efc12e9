//! [`Mailbox`]: a value that one thread at a time works on (a connection's state machine, in the
//! lane's `ConnCell`), and a mailbox beside it for a message to it (the cell's answer slot, holding
//! the connection's `Answer`) that any thread may post without waiting for the value.
//!
//! The rule: a message posted is applied exactly once, and never left in the mailbox once every
//! thread has let go. The poster tries to take the value and applies the message itself; if
//! another thread holds the value, that thread looks at the mailbox again after letting go, and
//! goes round while a message is there and nobody else took the value. Its locks go through
//! `crate::sync`, and a loom model checks the rule (`.ci/run`).

use crate::sync::{thread, Mutex};

/// What a [`Mailbox::visit`] step says comes after it lets go of the value.
pub(crate) enum Step<A> {
    /// Stop: no look at the mailbox (the value was taken out, or the step is done for good).
    Stop,
    /// Look at the mailbox: a message there runs the step again.
    LetGo,
    /// Run the visit's `after` with `A` (outside the value's lock), then look at the mailbox.
    LetGoThen(A),
    /// The value may not be worked on yet (another thread must act first): when waiting, yield
    /// and take it again; otherwise look at the mailbox.
    NotYet,
}

/// A value worked on by one thread at a time, and its mailbox.
pub(crate) struct Mailbox<C, M> {
    held: Mutex<Option<C>>,
    mail: Mutex<Option<M>>,
}

impl<C, M> Mailbox<C, M> {
    pub(crate) fn new(value: C) -> Self {
        Mailbox {
            held: Mutex::new(Some(value)),
            mail: Mutex::new(None),
        }
    }

    /// Leave `message` in the mailbox; follow with [`visit`](Self::visit) (without waiting) so
    /// that it is applied now if nobody holds the value.
    pub(crate) fn post(&self, message: M) {
        *self.mail.lock() = Some(message);
    }

    /// The message, taken (a step looks while it holds the value).
    pub(crate) fn take_mail(&self) -> Option<M> {
        self.mail.lock().take()
    }

    /// Run `step` with the value held (`None` once it was taken out: closed). `wait`: block for
    /// the value; otherwise give up at once when another thread holds it (that thread will see
    /// the mailbox). What `step` returns says what comes after letting go ([`Step`]); then a
    /// message found in the mailbox runs `step` again (without waiting), unless `step` said
    /// [`Step::Stop`] or another thread took the value meanwhile.
    pub(crate) fn visit<A>(
        &self,
        mut wait: bool,
        mut step: impl FnMut(&mut Option<C>) -> Step<A>,
        mut after: impl FnMut(A),
    ) {
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
            drop(held);
            match next {
                Step::Stop => return,
                Step::LetGo => {}
                Step::LetGoThen(a) => after(a),
                Step::NotYet if wait => {
                    thread::yield_now();
                    continue;
                }
                Step::NotYet => {}
            }
            wait = false;
            if self.mail.lock().is_none() {
                return;
            }
            // A message came while we held the value: go round (unless another thread took it).
        }
    }

    /// Take the value out for good (closing it), waiting for whoever holds it and, while
    /// `not_yet` says so, for whoever must act on it first.
    pub(crate) fn take_when(&self, not_yet: impl Fn() -> bool) -> Option<C> {
        loop {
            let mut held = self.held.lock();
            if !not_yet() {
                return held.take();
            }
            drop(held);
            thread::yield_now();
        }
    }

    /// Whether a message waits in the mailbox.
    #[cfg(test)]
    pub(crate) fn has_mail(&self) -> bool {
        self.mail.lock().is_some()
    }

    /// The value, held (tests look inside).
    #[cfg(test)]
    pub(crate) fn lock_for_test(&self) -> impl std::ops::Deref<Target = Option<C>> + '_ {
        self.held.lock()
    }

    /// `f` on the value if nobody holds it now (`None` if somebody does).
    pub(crate) fn peek<R>(&self, f: impl FnOnce(Option<&C>) -> R) -> Option<R> {
        self.held.try_lock().map(|held| f(held.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_posted_while_the_value_is_held_is_applied_by_the_holder_after_it_lets_go() {
        let mb = Mailbox::new(Vec::<u32>::new());
        let mut rounds = 0;
        mb.visit(
            true,
            |v| {
                rounds += 1;
                if rounds == 1 {
                    // Another thread posts now and finds the value held: its own visit gives up.
                    mb.post(7);
                    mb.visit(
                        false,
                        |_| -> Step<()> { unreachable!("the value is held") },
                        drop,
                    );
                }
                while let Some(m) = mb.take_mail() {
                    v.as_mut().unwrap().push(m);
                }
                Step::<()>::LetGo
            },
            drop,
        );
        assert_eq!(rounds, 1, "the holder drained it in its step");
        assert_eq!(mb.take_when(|| false), Some(vec![7]));
        assert_eq!(mb.take_when(|| false), None, "taken out for good");
        assert_eq!(mb.peek(|v| v.is_none()), Some(true));
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
            let mb = Arc::new(Mailbox::<Vec<u32>, u32>::new(Vec::new()));
            // As `ConnCell::with`'s step: apply what the mailbox holds, then re-arm (an atomic
            // swap, a point where another thread may run while the cell is still held).
            let armed = Arc::new(AtomicU64::new(0));
            let step =
                |v: &mut Option<Vec<u32>>, mb: &Mailbox<Vec<u32>, u32>, armed: &AtomicU64| {
                    while let Some(m) = mb.take_mail() {
                        v.as_mut().unwrap().push(m);
                    }
                    armed.swap(1, Ordering::SeqCst);
                    Step::<()>::LetGo
                };
            let answerer = {
                let (mb, armed) = (mb.clone(), armed.clone());
                thread::spawn(move || {
                    mb.post(1);
                    mb.visit(false, |v| step(v, &mb, &armed), drop);
                })
            };
            mb.visit(true, |v| step(v, &mb, &armed), drop);
            answerer.join().unwrap();
            assert!(mb.take_mail().is_none(), "an answer left in the mailbox");
            assert_eq!(
                mb.take_when(|| false),
                Some(vec![1]),
                "applied exactly once"
            );
        });
    }
}
