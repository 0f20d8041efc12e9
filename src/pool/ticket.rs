//! [`Ticket`]: the answer of a submitted job, to wait for, poll, take later, or `.await`; and
//! what dropping it does (a job that has not started is given back).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::job::{Job, TicketOps, ANSWERED_UNRUN, QUEUED};
use super::state::PoolState;
use super::stats::Counters;
use super::submit::await_answer;
use crate::error::Error;

/// What a ticket needs from its job, whatever the request type.
pub(crate) trait TicketJob<Resp>: Send + Sync {
    fn wait_answer(self: Arc<Self>, until: Option<Instant>) -> Option<Result<Resp, Error>>;
    fn try_take(&self) -> Option<Result<Resp, Error>>;
    /// The answer if it is there (`Ready(None)`: taken already), else `waker` is woken with it.
    fn poll_answer(&self, waker: &Waker) -> Poll<Option<Result<Resp, Error>>>;
    /// An async caller started waiting: make sure the watchdog answers the job at its deadline.
    fn watch_waiting(self: Arc<Self>);
    /// The ticket is dropped: a job nobody has started is never run.
    fn give_back(&self);
    fn is_done(&self) -> bool;
    fn id(&self) -> u64;
}

impl<Req: Send + 'static, Resp: Send + 'static> TicketJob<Resp> for Job<Req, Resp> {
    fn wait_answer(self: Arc<Self>, until: Option<Instant>) -> Option<Result<Resp, Error>> {
        let ops = self.pool.as_ref().and_then(Weak::upgrade);
        await_answer(&self, until, ops.as_deref())
    }
    fn try_take(&self) -> Option<Result<Resp, Error>> {
        self.answer.try_take()
    }
    fn poll_answer(&self, waker: &Waker) -> Poll<Option<Result<Resp, Error>>> {
        self.answer.poll_take(waker)
    }
    fn watch_waiting(self: Arc<Self>) {
        if self.state.load(Ordering::Acquire) != QUEUED {
            return; // running (its worker's slot is watched) or answered
        }
        if let Some(ops) = self.pool.as_ref().and_then(Weak::upgrade) {
            ops.watch_waiting(&self);
        }
    }
    fn give_back(&self) {
        // One load in the common case (the job ran or was answered); the claim makes a worker
        // that takes the job from the queue later skip it.
        if self.state.load(Ordering::Acquire) == QUEUED && self.claim(ANSWERED_UNRUN) {
            drop(self.take_req());
            if let Some(ops) = self.pool.as_ref().and_then(Weak::upgrade) {
                ops.count_abandoned();
            }
        }
    }
    fn is_done(&self) -> bool {
        self.answer.is_done()
    }
    fn id(&self) -> u64 {
        self.core.id
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> TicketOps<Req, Resp> for PoolState<Req, Resp> {
    fn watch_waiting(&self, job: &Arc<Job<Req, Resp>>) {
        // Same rule as at submission: a job an idle worker is about to take needs no entry.
        if self.idle_workers() == 0 {
            self.board.watch_queued(self.nanos(job.core.deadline), job);
        }
    }

    fn count_abandoned(&self) {
        Counters::bump(&self.counters.abandoned);
    }
}

/// A job refused at once: its answer is already there.
struct Refused<Resp>(Mutex<Option<Result<Resp, Error>>>);

impl<Resp: Send> TicketJob<Resp> for Refused<Resp> {
    fn wait_answer(self: Arc<Self>, _until: Option<Instant>) -> Option<Result<Resp, Error>> {
        self.0.lock().take()
    }
    fn try_take(&self) -> Option<Result<Resp, Error>> {
        self.0.lock().take()
    }
    fn poll_answer(&self, _waker: &Waker) -> Poll<Option<Result<Resp, Error>>> {
        Poll::Ready(self.0.lock().take())
    }
    fn watch_waiting(self: Arc<Self>) {}
    fn give_back(&self) {}
    fn is_done(&self) -> bool {
        true
    }
    fn id(&self) -> u64 {
        0
    }
}

/// The answer of a job queued with [`Pool::submit`](crate::Pool::submit) or
/// [`Pool::try_submit`](crate::Pool::try_submit). Exactly one answer comes through it: the
/// handler's, or the error that ended the job.
///
/// A `Ticket` waited on from inside a handler cannot deadlock waiting for a worker: see
/// [`Reentry`](crate::Reentry).
///
/// ```
/// use prefork_pool::Pool;
/// use std::time::Duration;
///
/// let pool = Pool::builder().workers(2).build(|x: u64, _| x * x).unwrap();
/// let tickets: Vec<_> = (0..4).map(|x| pool.submit(x)).collect();
/// let answers: Vec<u64> = tickets.into_iter().map(|t| t.wait().unwrap()).collect();
/// assert_eq!(answers, [0, 1, 4, 9]);
///
/// let t = pool.submit(5);
/// assert_eq!(t.wait_timeout(Duration::from_secs(5)).unwrap().unwrap(), 25);
/// assert!(t.try_take().is_none(), "an answer is taken once");
/// ```
///
/// # Async callers
///
/// A `Ticket` is a [`Future`] of its answer, so `pool.submit(req).await` works in any executor:
/// no runtime thread blocks, and nothing polls on a timer (the answer wakes the task). A Pool is
/// then a bounded, deadline-aware `spawn_blocking`: a full queue is a ticket that is ready at once
/// with [`Error::Overloaded`], and the deadline holds as for a blocking caller (the watchdog
/// answers [`Error::DeadlineExceeded`] at the deadline; a job still queued then is never run).
/// There is no separate `call_async`: [`Pool::submit`](crate::Pool::submit) never blocks, so
/// `submit(req).await` is that call.
///
/// ```
/// use prefork_pool::Pool;
/// use std::future::Future;
/// use std::sync::Arc;
/// use std::task::{Context, Poll, Wake, Waker};
/// use std::thread::{self, Thread};
///
/// // The smallest executor: poll, and park the thread until the waker unparks it. (Any
/// // executor does: tokio, async-std, futures::executor, pollster.)
/// struct Unpark(Thread);
/// impl Wake for Unpark {
///     fn wake(self: Arc<Self>) {
///         self.0.unpark();
///     }
/// }
/// fn block_on<F: Future>(fut: F) -> F::Output {
///     let mut fut = std::pin::pin!(fut);
///     let waker = Waker::from(Arc::new(Unpark(thread::current())));
///     let mut cx = Context::from_waker(&waker);
///     loop {
///         if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
///             return out;
///         }
///         thread::park();
///     }
/// }
///
/// let pool = Pool::builder().workers(2).build(|x: u64, _| x * x).unwrap();
/// let sum = block_on(async {
///     let (a, b) = (pool.submit(3), pool.submit(4)); // both queued at once
///     a.await.unwrap() + b.await.unwrap()
/// });
/// assert_eq!(sum, 25);
/// ```
///
/// # Dropping a ticket
///
/// Dropping a `Ticket` (or the future it is: a `select!` that took another branch, a timeout)
/// before its job started gives the job back: it is never run, and it is counted in
/// [`Stats::abandoned`](crate::Stats::abandoned). A job that has started runs to its end and its
/// answer is dropped; no other job's answer is touched (a ticket is its job's only waiter). To
/// let a job run though nobody waits for its answer, [`detach`](Self::detach) the ticket.
pub struct Ticket<Resp> {
    job: Arc<dyn TicketJob<Resp>>,
    /// Polled as a future at least once (the watchdog was told to watch the job).
    polled: bool,
    /// Dropped without giving the job back.
    detached: bool,
}

impl<Resp: Send + 'static> Ticket<Resp> {
    pub(crate) fn queued<Req: Send + 'static>(job: Arc<Job<Req, Resp>>) -> Self {
        Ticket {
            job,
            polled: false,
            detached: false,
        }
    }

    pub(crate) fn refused(err: Error) -> Self {
        Ticket {
            job: Arc::new(Refused(Mutex::new(Some(Err(err))))),
            polled: false,
            detached: false,
        }
    }

    /// Block until the answer is there (at the latest, shortly after the job's deadline).
    pub fn wait(self) -> Result<Resp, Error> {
        self.job
            .clone()
            .wait_answer(None)
            .expect("a ticket's answer is taken once, and `wait` consumes the ticket")
    }

    /// Let the job run though nobody waits for its answer (dropping the ticket instead gives back
    /// a job that has not started).
    ///
    /// ```
    /// use prefork_pool::Pool;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let runs = Arc::new(AtomicUsize::new(0));
    /// let counted = runs.clone();
    /// let pool = Pool::builder()
    ///     .workers(1)
    ///     .build(move |_: (), _| counted.fetch_add(1, Ordering::SeqCst))
    ///     .unwrap();
    /// pool.submit(()).detach();
    /// pool.shutdown(Duration::from_secs(5)); // finishes queued jobs
    /// assert_eq!(runs.load(Ordering::SeqCst), 1);
    /// ```
    pub fn detach(mut self) {
        self.detached = true;
    }

    /// Block until the answer is there or `timeout` passes (`None`: not yet; the ticket stays
    /// valid). Once taken, the answer is gone: later calls give `None`.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Result<Resp, Error>> {
        self.job.clone().wait_answer(Some(Instant::now() + timeout))
    }

    /// The answer if it is there, without blocking (once).
    pub fn try_take(&self) -> Option<Result<Resp, Error>> {
        self.job.try_take()
    }

    /// True once the job has been answered (taken or not).
    pub fn is_done(&self) -> bool {
        self.job.is_done()
    }

    /// The job's id (0 for a job refused at submission).
    pub fn job_id(&self) -> u64 {
        self.job.id()
    }
}

/// The ticket's answer, as a future: ready once the job is answered (see [Async
/// callers](Ticket#async-callers)).
///
/// # Panics
/// If polled after the answer was taken (after it gave `Ready`, or after
/// [`try_take`](Ticket::try_take) or [`wait_timeout`](Ticket::wait_timeout) took it).
impl<Resp: Send + 'static> Future for Ticket<Resp> {
    type Output = Result<Resp, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this.job.poll_answer(cx.waker()) {
            Poll::Ready(Some(answer)) => Poll::Ready(answer),
            Poll::Ready(None) => panic!(
                "a Ticket was polled after its answer was taken (it is taken once: by the poll                  that returned Ready, or by try_take / wait_timeout)"
            ),
            Poll::Pending => {
                if !this.polled {
                    // Nobody blocks on the job's deadline for us: have the watchdog watch it.
                    this.polled = true;
                    this.job.clone().watch_waiting();
                }
                Poll::Pending
            }
        }
    }
}

impl<Resp> Drop for Ticket<Resp> {
    fn drop(&mut self) {
        if !self.detached {
            self.job.give_back();
        }
    }
}

impl<Resp> std::fmt::Debug for Ticket<Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("job_id", &self.job.id())
            .field("done", &self.job.is_done())
            .finish()
    }
}
