//! The client side of one connection: the sans-IO [`SecureChannel`] shared by the callers and one reader task.
//!
//! A caller seals its request and writes it to the socket itself, under a short lock and without awaiting. Handing
//! the request to the connection task instead would cost a task wake-up per request, and when the caller runs on
//! another thread than the task (a `block_on` thread, another worker) a thread wake-up: on a round trip of a few
//! tens of microseconds that is a large share. The task reads and opens responses, hands each to its caller, renews
//! the token, and writes whatever a caller could not write at once (a full socket buffer).
//!
//! The lock is a plain mutex: nothing awaits while holding it. The channel leaves it only for a vault call (opening
//! a renewed token's response is RSA work), during which callers queue their requests and the task sends them as
//! soon as the channel is back.
//!
//! Request timeouts are the task's too. Every waiting request carries its deadline, and the task sweeps expired
//! ones with one timer, armed for the earliest deadline. A tokio timer per request cost more than half a microsecond
//! (registered in the timer wheel and removed again under its lock, measured on the development VM), for a timeout
//! that almost never fires. The task keeps sweeping while it waits for the vault.

use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::futures::Notified;
use tokio::sync::{oneshot, watch, Notify};

use super::ChannelState;
use crate::channel::secure_channel::{Event, Now, SecureChannel};
use crate::error::{Error, Result};
use crate::id_map::IdMap;
use crate::transport::tcp::{self, on_blocking_for};
use crate::transport::uacp::{Frame, FrameDecoder};
use crate::vault_pool::Urgency;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;
/// Frames handed to one vectored write.
const WRITE_SLICES: usize = 16;

/// Where a response goes.
pub(super) type Reply = oneshot::Sender<Result<Vec<u8>>>;

/// A request waiting for its response: where the response goes, and when the caller stops waiting.
struct Waiting {
    reply: Reply,
    deadline: Instant,
}

impl Waiting {
    fn fail(self, error: Error) {
        let _ = self.reply.send(Err(error));
    }
}

/// The deadline `timeout` from now; a timeout too long for the clock waits for (practically) ever.
pub(super) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout).or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400))).unwrap_or(now)
}

/// What the callers and the reader task share.
pub(super) struct Connection {
    writer: OwnedWriteHalf,
    state: Mutex<Shared>,
    /// A caller left bytes unwritten or asked to close: the task looks again.
    wake: Notify,
}

struct Shared {
    /// `None` while a vault step has the channel on a blocking thread.
    channel: Option<SecureChannel>,
    /// Sent requests by request id.
    pending: IdMap<u32, Waiting>,
    /// Requests made while the channel was away.
    queued: Vec<(Vec<u8>, Waiting)>,
    /// The deadline the task's sweep timer is armed for: no request waiting here expires before it.
    sweep_at: Option<Instant>,
    /// Sealed frames not yet (fully) written, in order.
    outbox: Outbox,
    /// A close asked for while the channel was away.
    close_requested: bool,
    /// Told when CloseSecureChannel is written.
    close_waiters: Vec<oneshot::Sender<Result<()>>>,
    /// The task is gone: nothing is sent or answered any more.
    ended: bool,
}

#[derive(Default)]
struct Outbox {
    frames: VecDeque<Vec<u8>>,
    /// Bytes of the first frame already written.
    offset: usize,
}

impl Outbox {
    /// Writes what the socket takes without waiting: `Ok(true)` when everything is written, `Ok(false)` when the
    /// socket buffer is full.
    fn write(&mut self, writer: &OwnedWriteHalf) -> std::io::Result<bool> {
        while !self.frames.is_empty() {
            // On the stack: a write per request must not allocate its slice list.
            let mut slices = [IoSlice::new(&[]); WRITE_SLICES];
            let mut count = 0;
            for (slot, frame) in slices.iter_mut().zip(&self.frames) {
                let start = if count == 0 { self.offset } else { 0 };
                *slot = IoSlice::new(frame.get(start..).unwrap_or_default());
                count += 1;
            }
            let slices = &slices[..count];
            match writer.try_write_vectored(slices) {
                Ok(n) => self.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn advance(&mut self, mut n: usize) {
        while let Some(front) = self.frames.front() {
            let left = front.len() - self.offset;
            if n < left {
                self.offset += n;
                return;
            }
            n -= left;
            self.offset = 0;
            self.frames.pop_front();
        }
    }
}

impl Shared {
    /// Moves what the channel sealed into the outbox and writes what the socket takes (see [`Outbox::write`]).
    fn write_out(&mut self, writer: &OwnedWriteHalf) -> std::io::Result<bool> {
        if let Some(channel) = self.channel.as_mut() {
            while let Some(frame) = channel.poll_transmit() {
                self.outbox.frames.push_back(frame);
            }
        }
        self.outbox.write(writer)
    }

    /// Sends requests queued while the channel was away.
    fn send_queued(&mut self) {
        let Some(channel) = self.channel.as_mut() else { return };
        for (body, waiting) in std::mem::take(&mut self.queued) {
            match channel.send_request(body) {
                Ok(id) => {
                    self.pending.insert(id, waiting);
                }
                Err(e) => waiting.fail(e),
            }
        }
    }

    /// Fails every request whose deadline has passed at `now` with [`Error::Timeout`], and arms the sweep for the
    /// earliest deadline left.
    fn expire(&mut self, now: Instant) {
        let timeout = || Error::Timeout("response");
        for (_, waiting) in self.pending.extract_if(|_, w| w.deadline <= now) {
            waiting.fail(timeout());
        }
        for (_, waiting) in self.queued.extract_if(.., |(_, w)| w.deadline <= now) {
            waiting.fail(timeout());
        }
        let left = self.pending.values().chain(self.queued.iter().map(|(_, w)| w));
        self.sweep_at = left.map(|w| w.deadline).min();
    }

    /// Hands the channel's events to the waiting callers.
    fn dispatch(&mut self, state: &watch::Sender<ChannelState>) {
        let Some(channel) = self.channel.as_mut() else { return };
        while let Some(event) = channel.poll_event() {
            match event {
                Event::Response { request_id, body } => {
                    if let Some(waiting) = self.pending.remove(&request_id) {
                        let _ = waiting.reply.send(Ok(body));
                    }
                }
                Event::Aborted { request_id, status, reason } => {
                    if let Some(waiting) = self.pending.remove(&request_id) {
                        waiting.fail(Error::Remote { status, reason });
                    }
                }
                Event::Opened { token_id, renewed, .. } => {
                    tracing::debug!(token_id, renewed, "security token installed");
                    state.send_modify(|s| {
                        s.token_id = token_id;
                        s.renewals += u32::from(renewed);
                    });
                }
                Event::Closed { status } => {
                    for (_, waiting) in self.pending.drain() {
                        waiting.fail(Error::Remote { status, reason: "the server closed the channel".into() });
                    }
                }
                Event::Request { .. } => {}
            }
        }
    }

    /// The end: every waiting caller learns it. A close succeeded if the channel is closed and nothing is left
    /// unwritten (the server may hang up as soon as it reads CloseSecureChannel).
    fn end(&mut self) {
        let closed = self.outbox.frames.is_empty() && self.channel.as_ref().is_some_and(SecureChannel::is_closed);
        self.ended = true;
        for (_, waiting) in self.pending.drain() {
            waiting.fail(Error::ChannelClosed);
        }
        for (_, waiting) in self.queued.drain(..) {
            waiting.fail(Error::ChannelClosed);
        }
        for waiter in self.close_waiters.drain(..) {
            let _ = waiter.send(if closed { Ok(()) } else { Err(Error::ChannelClosed) });
        }
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shared = self.state.lock();
        f.debug_struct("Connection")
            .field("pending", &shared.pending.len())
            .field("queued", &shared.queued.len())
            .field("ended", &shared.ended)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Splits `stream` and spawns the reader task for the open `channel`.
    pub(super) fn start(
        stream: TcpStream,
        channel: SecureChannel,
        decoder: FrameDecoder,
        state: watch::Sender<ChannelState>,
    ) -> (Arc<Connection>, tokio::task::JoinHandle<()>) {
        let (reader, writer) = stream.into_split();
        let conn = Arc::new(Connection {
            writer,
            state: Mutex::new(Shared {
                channel: Some(channel),
                pending: IdMap::default(),
                queued: Vec::new(),
                sweep_at: None,
                outbox: Outbox::default(),
                close_requested: false,
                close_waiters: Vec::new(),
                ended: false,
            }),
            wake: Notify::new(),
        });
        let task = tokio::spawn(tracing::Instrument::in_current_span(run(conn.clone(), reader, decoder, state)));
        (conn, task)
    }

    /// Seals `body` and writes it; `reply` gets the response, or [`Error::Timeout`] once `deadline` has passed.
    pub(super) fn request(&self, body: Vec<u8>, reply: Reply, deadline: Instant) -> Result<()> {
        let mut shared = self.state.lock();
        if shared.ended {
            return Err(Error::ChannelClosed);
        }
        // With equal timeouts every new deadline is later than the armed one, so this wakes the task only for the
        // first request after an idle spell or for a shorter timeout.
        let earlier = shared.sweep_at.is_none_or(|at| deadline < at);
        if earlier {
            shared.sweep_at = Some(deadline);
        }
        let waiting = Waiting { reply, deadline };
        let Some(channel) = shared.channel.as_mut() else {
            shared.queued.push((body, waiting));
            drop(shared);
            if earlier {
                self.wake.notify_one();
            }
            return Ok(());
        };
        let id = match channel.send_request(body) {
            Ok(id) => id,
            Err(e) => {
                // A refused send may have ended the channel: the task must look.
                drop(shared);
                self.wake.notify_one();
                return Err(e);
            }
        };
        shared.pending.insert(id, waiting);
        // A full socket buffer, or a failed write, is the task's to handle: it waits for the socket or ends.
        let written = matches!(shared.write_out(&self.writer), Ok(true));
        drop(shared);
        if earlier || !written {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Sends CloseSecureChannel; the receiver is told once it is written.
    pub(super) fn close(&self) -> oneshot::Receiver<Result<()>> {
        let (done, receiver) = oneshot::channel();
        let mut shared = self.state.lock();
        if shared.ended {
            let _ = done.send(Err(Error::ChannelClosed));
            return receiver;
        }
        match shared.channel.as_mut() {
            Some(channel) => {
                if let Err(e) = channel.close(Now::system()) {
                    let _ = done.send(Err(e));
                    return receiver;
                }
                if matches!(shared.write_out(&self.writer), Ok(true)) {
                    let _ = done.send(Ok(()));
                    drop(shared);
                    self.wake.notify_one();
                    return receiver;
                }
                // Whatever is left, the task writes (woken below).
            }
            None => shared.close_requested = true,
        }
        shared.close_waiters.push(done);
        drop(shared);
        self.wake.notify_one();
        receiver
    }

    /// Ends the connection at once (the task was aborted): waiting callers get [`Error::ChannelClosed`].
    pub(super) fn end(&self) {
        self.state.lock().end();
    }
}

/// The reader task: responses in, renewals on time, leftover bytes out.
async fn run(
    conn: Arc<Connection>,
    mut reader: OwnedReadHalf,
    mut decoder: FrameDecoder,
    state: watch::Sender<ChannelState>,
) {
    // Also when the task is aborted or its runtime goes away: nobody may wait for a reply that cannot come.
    struct EndGuard(Arc<Connection>);
    impl Drop for EndGuard {
        fn drop(&mut self) {
            self.0.end();
        }
    }
    let guard = EndGuard(conn.clone());
    let mut buf = vec![0u8; READ_CHUNK];
    let mut timer = tcp::Deadline::new();
    let mut sweep = tcp::Deadline::new();
    // One waiter for the whole task, re-armed only after it fires: a fresh `notified()` per turn registered (and
    // deregistered) a waiter under the Notify's lock for every response.
    let wake = conn.wake.notified();
    tokio::pin!(wake);
    let outcome: Result<()> = async {
        loop {
            let (deadline, sweep_at, writing) = {
                let mut shared = conn.state.lock();
                if shared.close_requested {
                    shared.close_requested = false;
                    if let Some(channel) = shared.channel.as_mut() {
                        channel.close(Now::system())?;
                    }
                }
                let writing = !shared.write_out(&conn.writer)?;
                let Some(channel) = shared.channel.as_ref() else { return Err(Error::ChannelClosed) };
                if channel.is_closed() && !writing {
                    return Ok(());
                }
                (channel.poll_timeout(), shared.sweep_at, writing)
            };
            tokio::select! {
                read = reader.read(&mut buf) => match read? {
                    0 => return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into())),
                    n => {
                        decoder.push(&buf[..n]);
                        while let Some(frame) = decoder.next_frame()? {
                            handle_frame(&conn, frame, &state, wake.as_mut()).await?;
                        }
                    }
                },
                // Written at the top of the loop.
                ready = conn.writer.writable(), if writing => ready?,
                () = &mut wake => wake.set(conn.wake.notified()),
                () = sweep.wait(sweep_at) => conn.state.lock().expire(Instant::now()),
                () = timer.wait(deadline) => {
                    // Renewal signs a new OpenSecureChannel request: a vault call.
                    let taken = conn.state.lock().channel.take();
                    let Some(taken) = taken else { return Err(Error::ChannelClosed) };
                    let renew = |c: &mut SecureChannel| c.handle_timeout(Now::system());
                    let step = on_blocking_for(Urgency::Established, taken, renew);
                    let (back, renewed) = sweeping(&conn, step, wake.as_mut()).await?;
                    let mut shared = conn.state.lock();
                    shared.channel = Some(back);
                    shared.send_queued();
                    renewed?;
                }
            }
        }
    }
    .await;
    if let Err(e) = &outcome {
        tracing::debug!(error = %e, "client channel ended");
    }
    conn.state.lock().end();
    state.send_modify(|s| s.open = false);
    drop(guard);
}

/// Awaits `step` (a vault call) while sweeping expired requests: a slow vault must not hold a caller past its
/// timeout. `wake` tells of requests with an earlier deadline.
async fn sweeping<'c, T>(conn: &'c Connection, step: impl Future<Output = T>, mut wake: Pin<&mut Notified<'c>>) -> T {
    tokio::pin!(step);
    let mut sweep = tcp::Deadline::new();
    loop {
        let sweep_at = conn.state.lock().sweep_at;
        tokio::select! {
            out = &mut step => return out,
            () = &mut wake => wake.set(conn.wake.notified()),
            () = sweep.wait(sweep_at) => conn.state.lock().expire(Instant::now()),
        }
    }
}

async fn handle_frame<'c>(
    conn: &'c Connection,
    frame: Frame,
    state: &watch::Sender<ChannelState>,
    wake: Pin<&mut Notified<'c>>,
) -> Result<()> {
    // An OpenSecureChannel response on an open channel is a renewal's: established traffic waits for it.
    let result = if tcp::needs_vault(frame.header.message_type) {
        let taken = conn.state.lock().channel.take();
        let Some(taken) = taken else { return Err(Error::ChannelClosed) };
        let step = on_blocking_for(Urgency::Established, taken, move |c| c.handle_frame(&frame.bytes, Now::system()));
        let (back, result) = sweeping(conn, step, wake).await?;
        let mut shared = conn.state.lock();
        shared.channel = Some(back);
        shared.send_queued();
        result
    } else {
        let mut shared = conn.state.lock();
        let Some(channel) = shared.channel.as_mut() else { return Err(Error::ChannelClosed) };
        channel.handle_frame(&frame.bytes, Now::system())
    };
    let mut shared = conn.state.lock();
    shared.dispatch(state);
    let closed = shared.channel.as_ref().is_none_or(SecureChannel::is_closed);
    match result {
        // A response nobody waits for (it timed out) does not end the channel.
        Err(e) if !closed && !e.is_fatal() => {
            tracing::debug!(error = %e, "ignored a frame");
            Ok(())
        }
        other => other,
    }
}
