//! The service's answer to one request: `poll_ready`, then `call`, in one future whose place
//! holds either the service and the request or the service's future, never both (an `async`
//! block keeps room for each), as it is part of the future every request allocates and moves.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::BoxError;

pin_project_lite::pin_project! {
    /// `service.call(req)` once the service is ready, its error boxed (the app's error type need
    /// not be `Send`). The service is dropped once called.
    pub(super) struct Call<S, R>
    where
        S: tower_service::Service<R>,
    {
        #[pin]
        state: State<S, R>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<S, R>
    where
        S: tower_service::Service<R>,
    {
        Ready { service: S, req: Option<R> },
        Calling { #[pin] fut: S::Future },
        Done,
    }
}

impl<S, R> Call<S, R>
where
    S: tower_service::Service<R>,
{
    pub(super) fn new(service: S, req: R) -> Self {
        Call {
            state: State::Ready {
                service,
                req: Some(req),
            },
        }
    }
}

impl<S, R> Future for Call<S, R>
where
    S: tower_service::Service<R>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Ready { service, req } => {
                    if let Err(e) = std::task::ready!(service.poll_ready(cx)) {
                        state.set(State::Done);
                        return Poll::Ready(Err(e.into()));
                    }
                    let Some(req) = req.take() else {
                        unreachable!("a Call's request is taken once")
                    };
                    let fut = service.call(req);
                    state.set(State::Calling { fut });
                }
                StateProj::Calling { fut } => {
                    let out = std::task::ready!(fut.poll(cx));
                    state.set(State::Done);
                    return Poll::Ready(out.map_err(Into::into));
                }
                StateProj::Done => panic!("a Call polled after it answered"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Ready at its second poll; answers the request doubled.
    #[derive(Clone)]
    struct Slow(Arc<AtomicUsize>);

    impl tower_service::Service<u32> for Slow {
        type Response = u32;
        type Error = String;
        type Future = std::future::Ready<Result<u32, String>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), String>> {
            if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: u32) -> Self::Future {
            std::future::ready(if req == 0 {
                Err("zero".into())
            } else {
                Ok(req * 2)
            })
        }
    }

    #[test]
    fn calls_once_ready_and_boxes_the_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let polls = Arc::new(AtomicUsize::new(0));
        let out = rt.block_on(Call::new(Slow(polls.clone()), 21));
        assert_eq!(out.unwrap(), 42);
        assert_eq!(polls.load(Ordering::SeqCst), 2);
        let err = rt.block_on(Call::new(Slow(polls), 0)).unwrap_err();
        assert_eq!(err.to_string(), "zero");
    }
}
