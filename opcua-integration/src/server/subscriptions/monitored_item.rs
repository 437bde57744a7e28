//! A monitored item (Part 4 §5.12.1): what is sampled, how often, and the queue of values waiting to be published.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use opcua_types::status_code::StatusCodeInfoType;
use opcua_types::{
    DataValue, MonitoredItemNotification, MonitoringMode, MonitoringParameters, ReadValueId, StatusCode,
    TimestampsToReturn,
};

use super::filter::ItemFilter;
use super::{after, millis, Sampler, SubscriptionLimits};
use crate::server::access::RequestContext;

/// The sampling interval granted for `requested` milliseconds (§5.12.1.2): a negative value (or NaN) asks for the
/// subscription's publishing interval, 0 for the fastest rate, and the result lies within the limits.
pub fn revise_sampling_interval(requested: f64, publishing_interval_ms: f64, limits: &SubscriptionLimits) -> f64 {
    let wanted = if requested.is_nan() || requested < 0.0 { publishing_interval_ms } else { requested };
    let (min, max) =
        (limits.min_sampling_interval_ms, limits.max_sampling_interval_ms.max(limits.min_sampling_interval_ms));
    wanted.clamp(min, max)
}

/// The queue size granted for `requested` (§5.12.1.5): at least 1, at most the limit.
pub fn revise_queue_size(requested: u32, limits: &SubscriptionLimits) -> u32 {
    requested.clamp(1, limits.max_queue_size.max(1))
}

/// The settings of an item that a client may change with ModifyMonitoredItems, already revised.
#[derive(Clone, Debug, PartialEq)]
pub struct ItemSettings {
    /// Returned with every notification of this item.
    pub client_handle: u32,
    /// The revised sampling interval, in milliseconds.
    pub sampling_interval_ms: f64,
    /// The revised queue size.
    pub queue_size: u32,
    /// Whether a full queue drops its oldest value (else its newest is replaced).
    pub discard_oldest: bool,
    /// The validated filter.
    pub filter: ItemFilter,
    /// Which timestamps the sampled values carry.
    pub timestamps: TimestampsToReturn,
}

impl ItemSettings {
    /// Validates and revises the parameters a client asked for. `eu_range` is only asked for a percent deadband.
    pub fn revise(
        params: &MonitoringParameters,
        item: &ReadValueId,
        timestamps: TimestampsToReturn,
        publishing_interval_ms: f64,
        limits: &SubscriptionLimits,
        sampler: &dyn Sampler,
    ) -> Result<ItemSettings, StatusCode> {
        let filter = ItemFilter::parse(&params.filter, item.attribute_id, &item.node_id, |n| sampler.eu_range(n))?;
        Ok(ItemSettings {
            client_handle: params.client_handle,
            sampling_interval_ms: revise_sampling_interval(params.sampling_interval, publishing_interval_ms, limits),
            queue_size: revise_queue_size(params.queue_size, limits),
            discard_oldest: params.discard_oldest,
            filter,
            timestamps,
        })
    }
}

/// One monitored item of a subscription.
#[derive(Clone, Debug)]
pub struct MonitoredItem {
    id: u32,
    item: ReadValueId,
    mode: MonitoringMode,
    settings: ItemSettings,
    /// The value last queued: what the filter compares a new sample with.
    last: Option<DataValue>,
    /// Values waiting to be published, each with the subscription-wide stamp that orders them across items.
    queue: VecDeque<(u64, DataValue)>,
    next_sample: Instant,
}

impl MonitoredItem {
    /// A new item; it is sampled first at `now` (so its initial value is reported) unless it is Disabled.
    pub fn new(id: u32, item: ReadValueId, mode: MonitoringMode, settings: ItemSettings, now: Instant) -> Self {
        MonitoredItem { id, item, mode, settings, last: None, queue: VecDeque::new(), next_sample: now }
    }

    /// The server-assigned id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// What is monitored.
    pub fn item_to_monitor(&self) -> &ReadValueId {
        &self.item
    }

    /// Disabled, Sampling or Reporting.
    pub fn mode(&self) -> MonitoringMode {
        self.mode
    }

    /// The revised settings.
    pub fn settings(&self) -> &ItemSettings {
        &self.settings
    }

    /// How many values wait in the queue.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// When the item wants to be sampled next; `None` while Disabled.
    pub fn next_sample(&self) -> Option<Instant> {
        (self.mode != MonitoringMode::Disabled).then_some(self.next_sample)
    }

    /// Whether its queued values may be published now.
    pub fn has_reportable(&self) -> bool {
        self.mode == MonitoringMode::Reporting && !self.queue.is_empty()
    }

    /// The stamps of the queued values, when they may be published.
    pub(crate) fn reportable_stamps(&self) -> impl Iterator<Item = u64> + '_ {
        let reporting = self.mode == MonitoringMode::Reporting;
        self.queue.iter().filter(move |_| reporting).map(|(stamp, _)| *stamp)
    }

    /// Applies new settings (ModifyMonitoredItems). A shorter queue drops values as discardOldest says and marks
    /// the overflow; the next sample comes no later than the new interval.
    pub fn modify(&mut self, settings: ItemSettings, now: Instant) {
        let interval = millis(settings.sampling_interval_ms);
        self.next_sample = self.next_sample.min(after(now, interval));
        self.settings = settings;
        self.shrink_to(self.capacity());
    }

    /// Changes the monitoring mode (SetMonitoringMode). Disabling empties the queue and forgets the last value, so
    /// the item reports its current value once it is enabled again.
    pub fn set_mode(&mut self, mode: MonitoringMode, now: Instant) {
        if mode == MonitoringMode::Disabled {
            self.queue.clear();
            self.last = None;
        } else if self.mode == MonitoringMode::Disabled {
            self.next_sample = now;
        }
        self.mode = mode;
    }

    /// Samples the item if it is due at `now`, queueing the value if the filter reports it.
    pub fn sample_if_due(&mut self, ctx: &RequestContext, sampler: &dyn Sampler, stamp: &mut u64) {
        let now = ctx.now.instant;
        if self.mode == MonitoringMode::Disabled || self.next_sample > now {
            return;
        }
        let interval = millis(self.settings.sampling_interval_ms);
        let next = after(self.next_sample, interval);
        // A driver that woke late does not make up for the missed samples: they would all read the same value.
        self.next_sample = if next <= now { after(now, interval.max(Duration::from_millis(1))) } else { next };
        let value = sampler.sample(ctx, &self.item, self.settings.timestamps);
        self.offer(value, stamp);
    }

    /// Queues `value` if the filter reports it as a change from the last queued one.
    pub fn offer(&mut self, value: DataValue, stamp: &mut u64) {
        if !self.settings.filter.reports(self.last.as_ref(), &value) {
            return;
        }
        self.last = Some(value.clone());
        self.enqueue(value, stamp);
    }

    /// Queues the last value again (TransferSubscriptions with sendInitialValues), unless values still wait in
    /// the queue: the newest of them is the last value, and it goes out with the next Publish anyway. Queueing it
    /// twice would report a change that never happened.
    pub fn requeue_last(&mut self, stamp: &mut u64) {
        if self.mode != MonitoringMode::Reporting || !self.queue.is_empty() {
            return;
        }
        if let Some(last) = self.last.clone() {
            self.enqueue(last, stamp);
        }
    }

    fn capacity(&self) -> usize {
        usize::try_from(self.settings.queue_size).unwrap_or(usize::MAX).max(1)
    }

    fn enqueue(&mut self, value: DataValue, stamp: &mut u64) {
        *stamp = stamp.wrapping_add(1);
        let capacity = self.capacity();
        // A queue of one is a buffer holding the newest value; §5.12.1.5 sets no overflow bit for it.
        if capacity == 1 {
            self.queue.clear();
            self.queue.push_back((*stamp, value));
            return;
        }
        if self.queue.len() < capacity {
            self.queue.push_back((*stamp, value));
            return;
        }
        if self.settings.discard_oldest {
            self.queue.pop_front();
            if let Some((_, oldest)) = self.queue.front_mut() {
                mark_overflow(oldest);
            }
            self.queue.push_back((*stamp, value));
        } else {
            self.queue.pop_back();
            let mut value = value;
            mark_overflow(&mut value);
            self.queue.push_back((*stamp, value));
        }
    }

    fn shrink_to(&mut self, capacity: usize) {
        if self.queue.len() <= capacity {
            return;
        }
        if self.settings.discard_oldest {
            while self.queue.len() > capacity {
                self.queue.pop_front();
            }
            if capacity > 1 {
                if let Some((_, oldest)) = self.queue.front_mut() {
                    mark_overflow(oldest);
                }
            }
        } else {
            self.queue.truncate(capacity);
            if capacity > 1 {
                if let Some((_, newest)) = self.queue.back_mut() {
                    mark_overflow(newest);
                }
            }
        }
    }

    /// Takes the queued values with a stamp up to `max_stamp` as notifications (oldest first).
    pub(crate) fn take_up_to(&mut self, max_stamp: u64, out: &mut Vec<(u64, MonitoredItemNotification)>) {
        while let Some((stamp, _)) = self.queue.front() {
            if *stamp > max_stamp {
                break;
            }
            if let Some((stamp, value)) = self.queue.pop_front() {
                out.push((stamp, MonitoredItemNotification { client_handle: self.settings.client_handle, value }));
            }
        }
    }
}

/// Sets the Overflow info bit (§7.39.2.1): values were lost between this one and its neighbour.
fn mark_overflow(value: &mut DataValue) {
    let status = value.status.unwrap_or(StatusCode::Good);
    value.status = Some(status.set_info_type(StatusCodeInfoType::DataValue).set_overflow(true));
}

#[cfg(test)]
mod tests {
    use super::*;
    use opcua_types::Variant;

    fn item(queue_size: u32, discard_oldest: bool) -> MonitoredItem {
        let settings = ItemSettings {
            client_handle: 7,
            sampling_interval_ms: 100.0,
            queue_size,
            discard_oldest,
            filter: ItemFilter::default(),
            timestamps: TimestampsToReturn::Both,
        };
        MonitoredItem::new(1, ReadValueId::default(), MonitoringMode::Reporting, settings, Instant::now())
    }

    fn values(item: &mut MonitoredItem) -> Vec<(i32, bool)> {
        let mut out = Vec::new();
        item.take_up_to(u64::MAX, &mut out);
        out.into_iter()
            .map(|(_, n)| match n.value.value {
                Some(Variant::Int32(v)) => (v, n.value.status.unwrap_or(StatusCode::Good).overflow()),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    fn offer_all(item: &mut MonitoredItem, vs: &[i32]) {
        let mut stamp = 0;
        for v in vs {
            item.offer(DataValue::new_now(*v), &mut stamp);
        }
    }

    #[test]
    fn revision_rules() {
        let limits = SubscriptionLimits::default();
        assert_eq!(revise_sampling_interval(-1.0, 500.0, &limits), 500.0);
        assert_eq!(revise_sampling_interval(f64::NAN, 500.0, &limits), 500.0);
        assert_eq!(revise_sampling_interval(0.0, 500.0, &limits), limits.min_sampling_interval_ms);
        assert_eq!(revise_sampling_interval(1e12, 500.0, &limits), limits.max_sampling_interval_ms);
        assert_eq!(revise_sampling_interval(250.0, 500.0, &limits), 250.0);
        assert_eq!(revise_queue_size(0, &limits), 1);
        assert_eq!(revise_queue_size(u32::MAX, &limits), limits.max_queue_size);
    }

    #[test]
    fn overflow_discarding_oldest_marks_the_oldest_remaining() {
        let mut it = item(3, true);
        offer_all(&mut it, &[1, 2, 3, 4, 5]);
        assert_eq!(values(&mut it), vec![(3, true), (4, false), (5, false)]);
    }

    #[test]
    fn overflow_discarding_newest_replaces_and_marks_the_last() {
        let mut it = item(3, false);
        offer_all(&mut it, &[1, 2, 3, 4, 5]);
        assert_eq!(values(&mut it), vec![(1, false), (2, false), (5, true)]);
    }

    #[test]
    fn a_queue_of_one_keeps_the_newest_without_overflow() {
        let mut it = item(1, true);
        offer_all(&mut it, &[1, 2, 3]);
        assert_eq!(values(&mut it), vec![(3, false)]);
    }

    #[test]
    fn requeueing_the_last_value_never_duplicates_a_queued_one() {
        let mut it = item(5, true);
        let mut stamp = 10;
        offer_all(&mut it, &[1, 2]);
        it.requeue_last(&mut stamp);
        assert_eq!(values(&mut it), vec![(1, false), (2, false)], "2 waits already: no second 2");
        it.requeue_last(&mut stamp);
        assert_eq!(values(&mut it), vec![(2, false)], "an empty queue gets the current value again");
    }

    #[test]
    fn disabling_empties_the_queue_and_forgets_the_last_value() {
        let mut it = item(5, true);
        offer_all(&mut it, &[1, 1]);
        assert_eq!(it.queued(), 1, "an unchanged value is not queued twice");
        it.set_mode(MonitoringMode::Disabled, Instant::now());
        assert_eq!(it.queued(), 0);
        assert!(it.next_sample().is_none());
        it.set_mode(MonitoringMode::Reporting, Instant::now());
        offer_all(&mut it, &[1]);
        assert_eq!(values(&mut it), vec![(1, false)]);
    }

    #[test]
    fn shrinking_the_queue_keeps_the_newest_when_discarding_oldest() {
        let mut it = item(5, true);
        offer_all(&mut it, &[1, 2, 3, 4]);
        let mut settings = it.settings().clone();
        settings.queue_size = 2;
        it.modify(settings, Instant::now());
        assert_eq!(values(&mut it), vec![(3, true), (4, false)]);
    }
}
