//! [`Ticket`]: the answer of a submitted job, to wait for, poll, or take later.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::job::Job;
use super::submit::await_answer;
use crate::error::Error;

/// What a ticket needs from its job, whatever the request type.
pub(crate) trait TicketJob<Resp>: Send + Sync {
    fn wait_answer(self: Arc<Self>, until: Option<Instant>) -> Option<Result<Resp, Error>>;
    fn try_take(&self) -> Option<Result<Resp, Error>>;
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
    fn is_done(&self) -> bool {
        self.answer.is_done()
    }
    fn id(&self) -> u64 {
        self.core.id
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
pub struct Ticket<Resp> {
    job: Arc<dyn TicketJob<Resp>>,
}

impl<Resp: Send + 'static> Ticket<Resp> {
    pub(crate) fn queued<Req: Send + 'static>(job: Arc<Job<Req, Resp>>) -> Self {
        Ticket { job }
    }

    pub(crate) fn refused(err: Error) -> Self {
        Ticket {
            job: Arc::new(Refused(Mutex::new(Some(Err(err))))),
        }
    }

    /// Block until the answer is there (at the latest, shortly after the job's deadline).
    pub fn wait(self) -> Result<Resp, Error> {
        self.job
            .wait_answer(None)
            .expect("a ticket's answer is taken once, and `wait` consumes the ticket")
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

impl<Resp> std::fmt::Debug for Ticket<Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("job_id", &self.job.id())
            .field("done", &self.job.is_done())
            .finish()
    }
}
