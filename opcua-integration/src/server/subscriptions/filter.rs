//! The DataChangeFilter of a monitored item (Part 4 §7.22.2): which changes are reported.
//!
//! A filter is validated once, when the item is created or modified, into an [`ItemFilter`] that cannot fail
//! afterwards. Without a filter, a Value attribute reports changes of status or value (trigger StatusValue, no
//! deadband) and any other attribute reports changes of its value.

use opcua_types::{
    AggregateFilter, AttributeId, DataChangeFilter, DataChangeTrigger, DataValue, DeadbandType, EventFilter,
    ExtensionObject, NodeId, StatusCode, Variant,
};

/// How large a change of a numeric value must be to be reported.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Deadband {
    /// Every change is reported.
    None,
    /// A change is reported when it exceeds this absolute amount.
    Absolute(f64),
    /// A percent deadband, already turned into the absolute amount it means for the item's EURange.
    Percent {
        /// The percentage the client asked for (0 to 100).
        percent: f64,
        /// `percent` of the EURange's width: the absolute amount a change must exceed.
        threshold: f64,
    },
}

impl Deadband {
    /// The absolute amount a change must exceed, or `None` when every change counts.
    fn threshold(&self) -> Option<f64> {
        match *self {
            Deadband::None => None,
            Deadband::Absolute(amount) => Some(amount),
            Deadband::Percent { threshold, .. } => Some(threshold),
        }
    }
}

/// A validated DataChangeFilter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ItemFilter {
    /// What counts as a change.
    pub trigger: DataChangeTrigger,
    /// How large a numeric change must be.
    pub deadband: Deadband,
}

impl Default for ItemFilter {
    /// The filter of an item that asked for none.
    fn default() -> Self {
        ItemFilter { trigger: DataChangeTrigger::StatusValue, deadband: Deadband::None }
    }
}

impl ItemFilter {
    /// Validates the filter a client asked for on `attribute_id` of `node`. `eu_range` is asked only for a percent
    /// deadband.
    ///
    /// Errors: BadFilterNotAllowed for any filter on an attribute other than Value; BadMonitoredItemFilterUnsupported
    /// for event and aggregate filters (not implemented) and for a percent deadband on a node without EURange;
    /// BadMonitoredItemFilterInvalid for an extension object that is no filter; BadDeadbandFilterInvalid for an
    /// unknown deadband type or a deadband value out of range.
    pub fn parse(
        filter: &ExtensionObject,
        attribute_id: u32,
        node: &NodeId,
        eu_range: impl FnOnce(&NodeId) -> Option<(f64, f64)>,
    ) -> Result<ItemFilter, StatusCode> {
        if filter.is_null() {
            return Ok(ItemFilter::default());
        }
        if attribute_id != AttributeId::Value as u32 {
            return Err(StatusCode::BadFilterNotAllowed);
        }
        let Some(filter) = filter.inner_as::<DataChangeFilter>() else {
            if filter.inner_is::<EventFilter>() || filter.inner_is::<AggregateFilter>() {
                return Err(StatusCode::BadMonitoredItemFilterUnsupported);
            }
            return Err(StatusCode::BadMonitoredItemFilterInvalid);
        };
        let kind = i32::try_from(filter.deadband_type)
            .ok()
            .and_then(|v| DeadbandType::try_from(v).ok())
            .ok_or(StatusCode::BadDeadbandFilterInvalid)?;
        let value = filter.deadband_value;
        let deadband = match kind {
            DeadbandType::None => Deadband::None,
            DeadbandType::Absolute => {
                if !value.is_finite() || value < 0.0 {
                    return Err(StatusCode::BadDeadbandFilterInvalid);
                }
                Deadband::Absolute(value)
            }
            DeadbandType::Percent => {
                if !value.is_finite() || !(0.0..=100.0).contains(&value) {
                    return Err(StatusCode::BadDeadbandFilterInvalid);
                }
                let (low, high) = eu_range(node).ok_or(StatusCode::BadMonitoredItemFilterUnsupported)?;
                let width = (high - low).abs();
                if !width.is_finite() {
                    return Err(StatusCode::BadMonitoredItemFilterUnsupported);
                }
                Deadband::Percent { percent: value, threshold: value / 100.0 * width }
            }
        };
        Ok(ItemFilter { trigger: filter.trigger, deadband })
    }

    /// Whether `new` is to be reported given the value reported last (`None`: nothing reported yet).
    pub fn reports(&self, last: Option<&DataValue>, new: &DataValue) -> bool {
        let Some(last) = last else { return true };
        let status = |v: &DataValue| v.status.unwrap_or(StatusCode::Good);
        if status(last) != status(new) {
            return true;
        }
        match self.trigger {
            DataChangeTrigger::Status => false,
            DataChangeTrigger::StatusValue => self.value_changed(last.value.as_ref(), new.value.as_ref()),
            DataChangeTrigger::StatusValueTimestamp => {
                last.source_timestamp != new.source_timestamp
                    || last.source_picoseconds != new.source_picoseconds
                    || self.value_changed(last.value.as_ref(), new.value.as_ref())
            }
        }
    }

    fn value_changed(&self, last: Option<&Variant>, new: Option<&Variant>) -> bool {
        match (last, new) {
            (None, None) => false,
            (Some(last), Some(new)) => match self.deadband.threshold() {
                None => last != new,
                Some(threshold) => exceeds(last, new, threshold),
            },
            _ => true,
        }
    }
}

/// Whether `new` differs from `last` by more than `threshold`. An array is reported whole when any element does,
/// or when its length or dimensions change (§7.22.2); values that are not numbers are compared for equality.
fn exceeds(last: &Variant, new: &Variant, threshold: f64) -> bool {
    match (last, new) {
        (Variant::Array(a), Variant::Array(b)) => {
            a.values.len() != b.values.len()
                || a.dimensions != b.dimensions
                || a.values.iter().zip(&b.values).any(|(x, y)| exceeds(x, y, threshold))
        }
        _ => match (last.as_f64(), new.as_f64()) {
            // NaN differences compare false, so a value going to or from NaN is reported by the equality test.
            (Some(x), Some(y)) if !x.is_nan() && !y.is_nan() => (x - y).abs() > threshold,
            _ => last != new,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dv(v: impl Into<Variant>) -> DataValue {
        DataValue { value: Some(v.into()), status: Some(StatusCode::Good), ..Default::default() }
    }

    fn filter(trigger: DataChangeTrigger, kind: DeadbandType, value: f64) -> ExtensionObject {
        ExtensionObject::from_message(DataChangeFilter { trigger, deadband_type: kind as u32, deadband_value: value })
    }

    fn parse(f: &ExtensionObject, range: Option<(f64, f64)>) -> Result<ItemFilter, StatusCode> {
        ItemFilter::parse(f, AttributeId::Value as u32, &NodeId::new(2, "x"), |_| range)
    }

    #[test]
    fn no_filter_reports_value_and_status_changes() {
        let f = parse(&ExtensionObject::null(), None).unwrap();
        assert!(f.reports(None, &dv(1.0)));
        assert!(!f.reports(Some(&dv(1.0)), &dv(1.0)));
        assert!(f.reports(Some(&dv(1.0)), &dv(1.5)));
        let bad = DataValue { status: Some(StatusCode::BadNodeIdUnknown), ..dv(1.0) };
        assert!(f.reports(Some(&dv(1.0)), &bad));
    }

    #[test]
    fn triggers() {
        let status = parse(&filter(DataChangeTrigger::Status, DeadbandType::None, 0.0), None).unwrap();
        assert!(!status.reports(Some(&dv(1)), &dv(2)));
        assert!(
            status.reports(Some(&dv(1)), &DataValue { status: Some(StatusCode::UncertainLastUsableValue), ..dv(1) })
        );
        let ts = parse(&filter(DataChangeTrigger::StatusValueTimestamp, DeadbandType::None, 0.0), None).unwrap();
        let later = DataValue { source_timestamp: Some(opcua_types::DateTime::now()), ..dv(1) };
        assert!(ts.reports(Some(&dv(1)), &later));
        let sv = ItemFilter::default();
        assert!(!sv.reports(Some(&dv(1)), &later));
    }

    #[test]
    fn absolute_deadband_suppresses_small_changes_including_arrays() {
        let f = parse(&filter(DataChangeTrigger::StatusValue, DeadbandType::Absolute, 0.5), None).unwrap();
        assert!(!f.reports(Some(&dv(10.0)), &dv(10.5)));
        assert!(f.reports(Some(&dv(10.0)), &dv(10.6)));
        assert!(f.reports(Some(&dv(10)), &dv(9)));
        let arr = |v: Vec<f64>| dv(Variant::from(v));
        assert!(!f.reports(Some(&arr(vec![1.0, 2.0])), &arr(vec![1.4, 2.4])));
        assert!(f.reports(Some(&arr(vec![1.0, 2.0])), &arr(vec![1.0, 2.6])));
        assert!(f.reports(Some(&arr(vec![1.0, 2.0])), &arr(vec![1.0, 2.0, 3.0])));
        // Non-numeric values are compared for equality.
        assert!(f.reports(Some(&dv("a")), &dv("b")));
        assert!(!f.reports(Some(&dv("a")), &dv("a")));
    }

    #[test]
    fn percent_deadband_uses_the_eu_range() {
        let f =
            parse(&filter(DataChangeTrigger::StatusValue, DeadbandType::Percent, 10.0), Some((0.0, 200.0))).unwrap();
        assert_eq!(f.deadband, Deadband::Percent { percent: 10.0, threshold: 20.0 });
        assert!(!f.reports(Some(&dv(100.0)), &dv(119.0)));
        assert!(f.reports(Some(&dv(100.0)), &dv(121.0)));
        let no_range = parse(&filter(DataChangeTrigger::StatusValue, DeadbandType::Percent, 10.0), None);
        assert_eq!(no_range, Err(StatusCode::BadMonitoredItemFilterUnsupported));
    }

    #[test]
    fn invalid_filters() {
        let p = |kind, v| parse(&filter(DataChangeTrigger::StatusValue, kind, v), Some((0.0, 1.0)));
        assert_eq!(p(DeadbandType::Absolute, -1.0), Err(StatusCode::BadDeadbandFilterInvalid));
        assert_eq!(p(DeadbandType::Absolute, f64::NAN), Err(StatusCode::BadDeadbandFilterInvalid));
        assert_eq!(p(DeadbandType::Percent, 101.0), Err(StatusCode::BadDeadbandFilterInvalid));
        let unknown = ExtensionObject::from_message(DataChangeFilter {
            trigger: DataChangeTrigger::StatusValue,
            deadband_type: 7,
            deadband_value: 1.0,
        });
        assert_eq!(parse(&unknown, None), Err(StatusCode::BadDeadbandFilterInvalid));
        let event = ExtensionObject::from_message(EventFilter::default());
        assert_eq!(parse(&event, None), Err(StatusCode::BadMonitoredItemFilterUnsupported));
        let not_a_filter = ExtensionObject::from_message(opcua_types::ReadValueId::default());
        assert_eq!(parse(&not_a_filter, None), Err(StatusCode::BadMonitoredItemFilterInvalid));
        let on_display_name = ItemFilter::parse(
            &filter(DataChangeTrigger::StatusValue, DeadbandType::None, 0.0),
            AttributeId::DisplayName as u32,
            &NodeId::new(2, "x"),
            |_| None,
        );
        assert_eq!(on_display_name, Err(StatusCode::BadFilterNotAllowed));
    }
}
