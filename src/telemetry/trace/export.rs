//! The export task: requests' spans from the bounded queue, in batches,
//! to the collector over OTLP/gRPC (`TraceService/Export`, h2c). A
//! failed export drops its batch (counted) and the task waits before the
//! next, doubling the wait up to [`MAX_BACKOFF`]; meanwhile the queue
//! fills and further spans are dropped as `queue_full`. Requests never
//! wait for any of this.

use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use tonic::transport::{Channel, Endpoint};

use super::otlp::{self, Encoded};
use super::{Finished, Queue};
use crate::config::Tracing;
use crate::telemetry::Metrics;

/// Requests whose spans wait for export at most (each one SERVER span
/// and a CLIENT span per attempt): a second of 2,000 sampled requests.
pub const QUEUE_REQUESTS: usize = 2048;
/// A batch is sent when it holds this many spans...
pub const BATCH_SPANS: usize = 512;
/// ... or this long after its first request ended (at most a [`TICK`]
/// more).
pub const BATCH_DELAY: Duration = Duration::from_secs(1);
/// How often the task looks at the queue.
pub const TICK: Duration = Duration::from_millis(100);
/// The longest one export may take (connecting included).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub(super) fn spawn(
    config: &Tracing,
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
) -> Result<(), String> {
    let endpoint = Endpoint::from_shared(config.endpoint.clone())
        .map_err(|e| format!("tracing.otlp.endpoint {}: {e}", config.endpoint))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(EXPORT_TIMEOUT);
    let exporter = Exporter {
        client: tonic::client::Grpc::new(endpoint.connect_lazy()),
        service_name: config.service_name.clone(),
        metrics,
        endpoint: config.endpoint.clone(),
    };
    tokio::spawn(exporter.run(queue));
    Ok(())
}

struct Exporter {
    client: tonic::client::Grpc<Channel>,
    service_name: String,
    metrics: Arc<Metrics>,
    endpoint: String,
}

impl Exporter {
    async fn run(mut self, queue: Arc<Queue>) {
        let mut backoff = MIN_BACKOFF;
        let mut failing = false;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pending: Vec<Finished> = Vec::new();
        let mut spans = 0usize;
        // When the oldest request waiting was taken from the queue.
        let mut since = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            let closed = queue.is_closed();
            let taken = queue.take();
            if pending.is_empty() && !taken.is_empty() {
                since = tokio::time::Instant::now();
            }
            for f in taken {
                spans += f.spans() as usize;
                pending.push(f);
            }
            let due = closed || since.elapsed() >= BATCH_DELAY || spans >= BATCH_SPANS;
            while due && !pending.is_empty() {
                // Whole requests, up to BATCH_SPANS spans (one request's
                // spans never split).
                let mut n = 0;
                let mut count = 0;
                for f in &pending {
                    if n > 0 && count + f.spans() as usize > BATCH_SPANS {
                        break;
                    }
                    count += f.spans() as usize;
                    n += 1;
                }
                let batch: Vec<Finished> = pending.drain(..n).collect();
                spans -= count;
                let encoded = otlp::request(&self.service_name, &batch);
                drop(batch);
                if self.send(encoded, count as u64, &mut failing).await {
                    backoff = MIN_BACKOFF;
                    continue;
                }
                // What waits now is dropped too; the queue fills
                // meanwhile and drops as `queue_full`.
                self.metrics.trace.drop_spans("export_failed", spans as u64);
                pending.clear();
                spans = 0;
                if !closed {
                    tokio::time::sleep(backoff).await;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            if closed {
                return;
            }
        }
    }

    /// Exports one batch of `n` spans, counting them as exported or
    /// dropped; false when the export failed.
    async fn send(&mut self, batch: Encoded, n: u64, failing: &mut bool) -> bool {
        match self.export(batch).await {
            Ok(rejected) => {
                let rejected = rejected.min(n);
                self.metrics.trace.exported.inc_by(n - rejected);
                if rejected > 0 {
                    self.metrics.trace.drop_spans("rejected", rejected);
                }
                if *failing {
                    tracing::info!(endpoint = %self.endpoint, "the OTLP collector takes spans again");
                }
                *failing = false;
                true
            }
            Err(status) => {
                self.metrics.trace.drop_spans("export_failed", n);
                if !*failing {
                    tracing::warn!(
                        endpoint = %self.endpoint,
                        error = %status.message(),
                        "cannot export spans to the OTLP collector; dropping them (torii_trace_spans_dropped_total) and trying again later"
                    );
                }
                *failing = true;
                false
            }
        }
    }

    /// `TraceService/Export`; Ok with the number of spans the collector
    /// rejected.
    async fn export(&mut self, batch: Encoded) -> Result<u64, tonic::Status> {
        self.client
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let path = PathAndQuery::from_static(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        );
        let resp = self
            .client
            .unary(tonic::Request::new(batch), path, ExportCodec)
            .await?
            .into_inner();
        Ok(resp
            .partial_success
            .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0)))
    }
}

/// `TraceService/Export`'s codec: the request goes out as the bytes
/// [`otlp::request`] wrote, into a buffer made its size at once (prost's
/// encoder grows tonic's 8 KiB buffer by doubling, copying the batch
/// again each time); the answer is decoded by prost.
struct ExportCodec;

impl tonic::codec::Codec for ExportCodec {
    type Encode = Encoded;
    type Decode = ExportTraceServiceResponse;
    type Encoder = EncodedWriter;
    type Decoder = tonic_prost::ProstDecoder<ExportTraceServiceResponse>;

    fn encoder(&mut self) -> EncodedWriter {
        EncodedWriter
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstCodec::<ExportTraceServiceResponse, ExportTraceServiceResponse>::raw_decoder(
            tonic::codec::BufferSettings::default(),
        )
    }
}

struct EncodedWriter;

impl tonic::codec::Encoder for EncodedWriter {
    type Item = Encoded;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Encoded,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.reserve(item.head.len() + item.spans.len());
        dst.put_slice(&item.head);
        dst.put_slice(&item.spans);
        Ok(())
    }
}
