//! A session's queue of pending Publish requests (Part 4 §5.13.5).
//!
//! Publish requests are parked here until a subscription of the session has something to send. Each is known by
//! an opaque token the driver chose, so the engine never touches the connection it came from.

use std::collections::VecDeque;
use std::time::Instant;

use opcua_types::{NotificationMessage, PublishResponse, ResponseHeader, StatusCode};

/// A Publish request waiting for an answer.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingPublish {
    /// The driver's token for the request.
    pub token: u64,
    /// The client's request handle, echoed in the response header.
    pub request_handle: u32,
    /// The results of the acknowledgements the request carried, in their order.
    pub ack_results: Vec<StatusCode>,
    /// When the request's timeoutHint passes (`None`: no hint).
    pub deadline: Option<Instant>,
}

impl PendingPublish {
    /// The answer carrying `message` of subscription `subscription_id`.
    pub fn respond(
        self,
        publish_time: opcua_types::DateTime,
        subscription_id: u32,
        message: NotificationMessage,
        available_sequence_numbers: Vec<u32>,
        more_notifications: bool,
    ) -> PublishResponse {
        PublishResponse {
            response_header: ResponseHeader::new_timestamped_service_result(
                publish_time,
                self.request_handle,
                StatusCode::Good,
            ),
            subscription_id,
            available_sequence_numbers: Some(available_sequence_numbers),
            more_notifications,
            notification_message: message,
            results: Some(self.ack_results),
            diagnostic_infos: None,
        }
    }
}

/// The pending Publish requests of one session, oldest first.
#[derive(Clone, Debug, Default)]
pub struct PublishQueue {
    queue: VecDeque<PendingPublish>,
}

impl PublishQueue {
    /// Queues `request`. When the queue already holds `limit` requests, the oldest is removed and returned, to be
    /// answered BadTooManyPublishRequests.
    pub fn push(&mut self, request: PendingPublish, limit: usize) -> Option<PendingPublish> {
        let displaced = if self.queue.len() >= limit.max(1) { self.queue.pop_front() } else { None };
        self.queue.push_back(request);
        displaced
    }

    /// Takes the oldest request.
    pub fn pop(&mut self) -> Option<PendingPublish> {
        self.queue.pop_front()
    }

    /// Removes and returns the requests whose timeoutHint has passed at `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<PendingPublish> {
        let (expired, kept): (Vec<_>, Vec<_>) =
            self.queue.drain(..).partition(|p| p.deadline.is_some_and(|deadline| deadline <= now));
        self.queue = kept.into();
        expired
    }

    /// The earliest deadline of a queued request.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.iter().filter_map(|p| p.deadline).min()
    }

    /// Removes every request.
    pub fn drain(&mut self) -> impl Iterator<Item = PendingPublish> + '_ {
        self.queue.drain(..)
    }

    /// How many requests wait.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no request waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pending(token: u64, deadline: Option<Instant>) -> PendingPublish {
        PendingPublish { token, request_handle: 0, ack_results: vec![], deadline }
    }

    #[test]
    fn the_oldest_is_displaced_beyond_the_limit() {
        let mut q = PublishQueue::default();
        assert!(q.push(pending(1, None), 2).is_none());
        assert!(q.push(pending(2, None), 2).is_none());
        assert_eq!(q.push(pending(3, None), 2).map(|p| p.token), Some(1));
        assert_eq!(q.pop().map(|p| p.token), Some(2));
    }

    #[test]
    fn expiry_removes_only_passed_deadlines() {
        let t0 = Instant::now();
        let mut q = PublishQueue::default();
        q.push(pending(1, Some(t0 + Duration::from_secs(1))), 10);
        q.push(pending(2, None), 10);
        q.push(pending(3, Some(t0 + Duration::from_secs(5))), 10);
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert!(q.expire(t0).is_empty());
        let expired: Vec<u64> = q.expire(t0 + Duration::from_secs(2)).into_iter().map(|p| p.token).collect();
        assert_eq!(expired, vec![1]);
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop().map(|p| p.token), Some(2), "order is kept");
    }
}
