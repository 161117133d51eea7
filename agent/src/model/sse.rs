//! Server-Sent Events, the second transport: what the snapshot says about streams answered
//! with `Content-Type: text/event-stream`, counted from the wire like WebSocket frames. Kept
//! apart from `WebSocketStats` so every consumer (API, metrics, history, alerts, `top`) can
//! treat the two transports side by side with the same shape: per process and host totals, and
//! per connection. The names of [`SseStats`]'s first seven fields are the API contract of
//! issue #20 (`docs/api.md`).

use serde::{Deserialize, Serialize};

/// Which protocol a followed connection speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Websocket,
    Sse,
}

impl Transport {
    /// The label value in `/metrics`, history and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Websocket => "websocket",
            Transport::Sse => "sse",
        }
    }
}

/// Cumulative SSE counters of one process (or the host), from the process's side: it serves
/// the streams, so everything is "sent".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SseStats {
    /// Responses with `Content-Type: text/event-stream` written (the stream began).
    pub streams_opened: u64,
    pub streams_active: u64,
    pub streams_closed: u64,
    /// Events delivered: blocks ended by a blank line that carry at least one `data` field.
    pub events_sent: u64,
    /// Comment lines (starting with `:`, keep-alives included), counted apart from events.
    pub comments_sent: u64,
    /// Bytes of the event stream the client's parser reads (fields, comments, line ends),
    /// after removing HTTP chunked framing; the response head is not included.
    pub payload_bytes_sent: u64,
    /// Streams whose request carried `Last-Event-ID` (a client reconnecting and resuming).
    pub resumed_streams: u64,
    /// Closed streams by who ended them: the client went away first (its FIN or reset), or
    /// the server ended the stream (chunked terminator, or it closed first).
    pub closed_by_client: u64,
    pub closed_by_server: u64,
    /// Streams whose body is compressed (`Content-Encoding` other than `identity`): counted as
    /// streams and bytes, their events and comments are not parsed.
    pub unparseable_streams: u64,
    /// Streams whose framing could not be followed (malformed chunking, a write the probe
    /// could not read): their later events are not counted, never guessed.
    pub out_of_sync: u64,
}

impl SseStats {
    /// Add another process's numbers (host totals).
    pub fn add(&mut self, o: &SseStats) {
        self.streams_opened += o.streams_opened;
        self.streams_active += o.streams_active;
        self.streams_closed += o.streams_closed;
        self.events_sent += o.events_sent;
        self.comments_sent += o.comments_sent;
        self.payload_bytes_sent += o.payload_bytes_sent;
        self.resumed_streams += o.resumed_streams;
        self.closed_by_client += o.closed_by_client;
        self.closed_by_server += o.closed_by_server;
        self.unparseable_streams += o.unparseable_streams;
        self.out_of_sync += o.out_of_sync;
    }
}

/// One open SSE stream, as the per-connection view shows it (`transport = "sse"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SseConnStats {
    pub events_sent: u64,
    pub comments_sent: u64,
    pub payload_bytes_sent: u64,
    /// The request carried `Last-Event-ID`.
    pub resumed: bool,
    /// Seconds since the last event was written (since the stream began if none yet): "when
    /// did this stream go quiet". Comments (keep-alives) do not reset it.
    pub seconds_since_last_event: f64,
    /// `Content-Encoding` compressed: events not parsed.
    pub unparseable: bool,
    pub out_of_sync: bool,
}

/// What the open SSE streams of one process look like now, from the per-connection view
/// (`track/sse.rs`): the gauges an operator asks of streams that counters cannot give.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SseStreams {
    /// Open streams with no event for `[limits] idle_after` (keep-alive comments do not count
    /// as events, so a stream kept alive by comments alone goes idle).
    pub idle: u64,
    /// The longest `seconds_since_last_event` over the open streams (0 with none open).
    pub max_seconds_since_last_event: f64,
    /// Open streams per client key: the same keys (`[probe.client_key]`) and quota
    /// (`[limits] per_client_connections`) as WebSocket connections.
    pub clients: super::clients::ClientsSnapshot,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_serializes_as_its_label() {
        assert_eq!(serde_json::to_string(&Transport::Sse).unwrap(), "\"sse\"");
        assert_eq!(Transport::Websocket.as_str(), "websocket");
        let t: Transport = serde_json::from_str("\"websocket\"").unwrap();
        assert_eq!(t, Transport::Websocket);
    }

    #[test]
    fn totals_add_every_field() {
        let one = SseStats {
            streams_opened: 1,
            streams_active: 2,
            streams_closed: 3,
            events_sent: 4,
            comments_sent: 5,
            payload_bytes_sent: 6,
            resumed_streams: 7,
            closed_by_client: 8,
            closed_by_server: 9,
            unparseable_streams: 10,
            out_of_sync: 11,
        };
        let mut sum = one.clone();
        sum.add(&one);
        let v = serde_json::to_value(&sum).unwrap();
        let o = serde_json::to_value(&one).unwrap();
        for (k, n) in o.as_object().unwrap() {
            assert_eq!(v[k].as_u64().unwrap(), 2 * n.as_u64().unwrap(), "{k}");
        }
    }
}
