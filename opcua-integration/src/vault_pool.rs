//! Where vault calls run: a small pool of threads at a lower CPU priority than the async runtime.
//!
//! A handshake costs the server a vault signature and a decryption per RSA block. On a hardware token that is mostly
//! waiting; on a software token (SoftHSM2, tpm2-pkcs11 over swtpm) or a busy host it is CPU work. Run on tokio's
//! blocking pool at normal priority, a burst of new connections competed on equal terms with the runtime threads that
//! carry established sessions, whose reads then waited behind RSA work. These threads make themselves background
//! threads when they start (Linux SCHED_IDLE, see [`make_background_thread`]): the kernel runs the runtime's
//! symmetric traffic first and the handshakes in the gaps, so new connections slow down under load and established
//! sessions do not.
//!
//! Background means a sliver of a CPU that stays busy (SCHED_IDLE weighs 3 against a normal thread's 1,024), and an
//! unprivileged thread cannot leave that policy again. That is right for new connections, which may wait, and wrong
//! for the vault calls that keep an established channel alive: a token renewal that waits past the token's lifetime
//! ends the channel. Those run at normal priority ([`Urgency::Established`], [`run_for`]).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let answer = certvault_opcua::vault_pool::run(|| 6 * 7).await;
//! assert_eq!(answer.ok(), Some(42));
//! # }
//! ```

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::oneshot;

/// How much nicer than the process the pool's threads make themselves.
pub const NICE_INCREMENT: i32 = 10;

/// Threads in the pool: vault calls block (on a token, a daemon socket), so a few may wait at once.
const THREADS: usize = 4;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The job was dropped before it ran: the pool could not start a thread, or the job panicked.
#[derive(Debug, thiserror::Error)]
#[error("the vault call did not complete (its thread ended)")]
pub struct Canceled;

struct Pool {
    jobs: Mutex<Sender<Job>>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..THREADS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("certvault-vault-{i}")).spawn(move || worker(&rx));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "could not start a vault thread");
            }
        }
        Pool { jobs: Mutex::new(tx) }
    })
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    make_background_thread();
    loop {
        // The lock is held only while waiting for the next job, never while running one.
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match job {
            // A panicking backend loses its own caller's result (the sender drops: `Canceled`), not the thread.
            Ok(job) => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
            Err(_) => return,
        }
    }
}

/// Makes the calling thread a background thread: Linux's SCHED_IDLE policy, under which any runnable thread of
/// normal policy runs first and preempts it as soon as it wakes (a lower nice value alone still let a runtime thread
/// wait out the vault thread's time slice, about a millisecond); where that is refused, [`NICE_INCREMENT`] nice
/// levels lower.
pub fn make_background_thread() {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy, ThreadPriority,
        ThreadSchedulePolicy,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
        tracing::debug!(error = ?e, "SCHED_IDLE refused; lowering the nice value instead");
        lower_thread_priority(NICE_INCREMENT);
    }
}

/// Lowers the calling thread's CPU priority by `increment` nice levels (Linux: per thread). Failure is logged and
/// ignored: priority is an optimisation, never a condition for correctness.
pub fn lower_thread_priority(increment: i32) {
    let tid = rustix::thread::gettid();
    let current = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
    if let Err(e) = rustix::process::setpriority_process(Some(tid), (current + increment).min(19)) {
        tracing::debug!(error = %e, "could not lower a vault thread's priority");
    }
}

/// Who waits for a vault call; it decides the call's CPU priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Urgency {
    /// A new connection or session: the background pool, after established traffic.
    New,
    /// An established channel's token renewal: normal priority (tokio's blocking pool), because an overdue renewal
    /// ends the channel.
    Established,
}

/// Runs `f` where `urgency` says: the background pool ([`run`]) or a blocking thread at normal priority.
pub async fn run_for<R: Send + 'static>(
    urgency: Urgency,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, Canceled> {
    match urgency {
        Urgency::New => run(f).await,
        Urgency::Established => tokio::task::spawn_blocking(f).await.map_err(|_| Canceled),
    }
}

/// Runs `f` on the vault pool and waits for its result without blocking the runtime.
pub async fn run<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Result<R, Canceled> {
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    let sent = match pool().jobs.lock() {
        Ok(jobs) => jobs.send(job).is_ok(),
        Err(_) => false,
    };
    if !sent {
        return Err(Canceled);
    }
    rx.await.map_err(|_| Canceled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn runs_off_the_runtime_at_a_lower_priority() {
        use thread_priority::{thread_schedule_policy, NormalThreadSchedulePolicy, ThreadSchedulePolicy};
        let (name, policy) =
            run(|| (std::thread::current().name().map(str::to_owned), thread_schedule_policy())).await.unwrap();
        assert!(name.is_some_and(|n| n.starts_with("certvault-vault-")));
        assert_eq!(policy.unwrap(), ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle));
        // A panicking job loses only its own result; the pool keeps serving.
        assert!(run(|| panic!("a vault backend bug")).await.is_err());
        // Renewals run at normal priority, off the background pool.
        let policy = run_for(Urgency::Established, thread_schedule_policy).await.unwrap();
        assert_eq!(policy.unwrap(), ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other));
        let results = futures_util::future::join_all((0..16).map(|i| run(move || i * 2))).await;
        assert_eq!(results.into_iter().map(Result::unwrap).sum::<i32>(), (0..16).map(|i| i * 2).sum::<i32>());
    }
}
