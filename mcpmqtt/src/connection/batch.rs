//! Splitting a long list of topic filters into SUBSCRIBE packets that
//! brokers accept, and how many of them may await their SUBACK at once. It
//! plans; [`Link`](super::Link) sends.
//!
//! MQTT sets no limit on the filters of one SUBSCRIBE, but brokers do: every
//! packet is held to the broker's Maximum Packet Size (EMQX: 1 MiB by
//! default), some take only a few filters per packet, and a broker that
//! refuses a packet closes the connection, taking every filter of it down
//! together. A server hosting 10,000 tools has 10,001 filters to subscribe;
//! they go in packets of at most [`MAX_FILTERS`] filters and [`MAX_BYTES`]
//! bytes (and never more than half the connection's maximum packet size).

use std::ops::Range;

/// At most this many filters in one SUBSCRIBE.
pub(crate) const MAX_FILTERS: usize = 100;

/// At most this many bytes of filters in one SUBSCRIBE.
pub(crate) const MAX_BYTES: usize = 32 * 1024;

/// What a SUBSCRIBE or UNSUBSCRIBE carries besides its filters, at most: the
/// fixed header (1 byte and a Remaining Length of up to 4), the packet id
/// (2) and the MQTT 5 properties' length (1, no properties).
const PACKET_OVERHEAD: usize = 1 + 4 + 2 + 1;

/// At most this many SUBSCRIBE or UNSUBSCRIBE packets await their
/// acknowledgement at once, on one [`Link`](super::Link) call.
const MAX_IN_FLIGHT: usize = 8;

/// The bytes one filter takes in a SUBSCRIBE: its length (2), the filter,
/// and the subscription options (1).
pub(crate) fn subscribe_entry(filter: &str) -> usize {
    2 + filter.len() + 1
}

/// The bytes of filters one packet may carry on a connection whose largest
/// packet is `max_packet_size`: [`MAX_BYTES`], or well under that limit.
pub(crate) fn bytes_per_packet(max_packet_size: u32) -> usize {
    let half = usize::try_from(max_packet_size / 2).unwrap_or(usize::MAX);
    half.min(MAX_BYTES).saturating_sub(PACKET_OVERHEAD).max(1)
}

/// How many packets may await their acknowledgement at once when the send
/// window (the broker's Receive Maximum) is `window`.
///
/// rumqttc draws the packet ids of SUBSCRIBEs and UNSUBSCRIBEs from the
/// publishes' cycle of `window` ids without checking which are still in
/// use, so at most half of them go to these packets: a broker that counts
/// ids sees few reused, and the book tells any reused apart (they are
/// answered in order).
pub(crate) fn in_flight(window: usize) -> usize {
    (window / 2).clamp(1, MAX_IN_FLIGHT)
}

/// Splits entries of `sizes` bytes, in order, into consecutive ranges of at
/// most `max_count` entries and `max_bytes` bytes. An entry larger than
/// `max_bytes` goes in a range of its own (the broker decides whether it
/// takes it). No range is empty; no entries, no ranges.
pub(crate) fn plan(sizes: impl IntoIterator<Item = usize>, max_count: usize, max_bytes: usize) -> Vec<Range<usize>> {
    let max_count = max_count.max(1);
    let mut ranges = Vec::new();
    let (mut start, mut count, mut bytes) = (0, 0, 0);
    for (i, size) in sizes.into_iter().enumerate() {
        if count > 0 && (count == max_count || bytes + size > max_bytes) {
            ranges.push(start..i);
            (start, count, bytes) = (i, 0, 0);
        }
        count += 1;
        bytes += size;
    }
    if count > 0 {
        ranges.push(start..start + count);
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_thousand_filters_go_in_packets_of_a_hundred() {
        let filters: Vec<String> = (0..10_001)
            .map(|i| format!("$share/mcp-tool-t{i:04}/bench-tools/mcp/tools/t{i:04}/call/#"))
            .collect();
        let ranges = plan(
            filters.iter().map(|f| subscribe_entry(f)),
            MAX_FILTERS,
            bytes_per_packet(16 * 1024 * 1024),
        );
        assert_eq!(ranges.len(), 101);
        assert!(ranges.iter().take(100).all(|r| r.len() == MAX_FILTERS));
        assert_eq!(ranges[100], 10_000..10_001);
        // Every filter once, in order.
        let flat: Vec<usize> = ranges.into_iter().flatten().collect();
        assert_eq!(flat, (0..10_001).collect::<Vec<_>>());
    }

    #[test]
    fn a_small_packet_limit_makes_smaller_packets() {
        // A broker that takes packets of 1 KiB at most: 512 bytes of filters,
        // less the packet's own, per packet.
        let budget = bytes_per_packet(1024);
        assert_eq!(budget, 512 - PACKET_OVERHEAD);
        let ranges = plan([100; 20], MAX_FILTERS, budget);
        assert!(ranges.iter().all(|r| r.len() * 100 <= budget), "{ranges:?}");
        assert_eq!(ranges.iter().map(Range::len).sum::<usize>(), 20);
        assert_eq!(ranges[0], 0..5);
        assert_eq!(bytes_per_packet(16 * 1024 * 1024), MAX_BYTES - PACKET_OVERHEAD);
    }

    #[test]
    fn an_entry_over_the_limit_goes_alone_and_nothing_is_empty() {
        assert_eq!(plan([10, 500, 10, 10], 100, 100), vec![0..1, 1..2, 2..4]);
        assert_eq!(plan([500], 100, 100), vec![0..1]);
        assert!(plan(std::iter::empty(), 100, 100).is_empty());
        assert_eq!(
            plan([1, 1, 1], 0, 100),
            vec![0..1, 1..2, 2..3],
            "at least one per packet"
        );
    }

    #[test]
    fn packets_in_flight_stay_under_half_the_window() {
        assert_eq!(in_flight(0), 1, "before the CONNACK");
        assert_eq!(in_flight(3), 1);
        assert_eq!(in_flight(20), MAX_IN_FLIGHT, "Mosquitto's Receive Maximum");
        assert_eq!(in_flight(10), 5);
        assert_eq!(in_flight(65_535), MAX_IN_FLIGHT);
    }
}
