//! `collector bench --kafka`: the same load over the Kafka protocol. A minimal Kafka
//! client (one connection per broker, one request in flight on it, as the HTTP path
//! has), so the two front ends are compared with the same batches and the same client
//! work; only the wire protocol differs.

use std::collections::HashMap;

use anyhow::{Context, anyhow, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, InitProducerIdRequest, InitProducerIdResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceRequest,
    ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

/// Versions used: the newest ones naming topics by name.
const PRODUCE_VERSION: i16 = 12;
const FETCH_VERSION: i16 = 12;
const METADATA_VERSION: i16 = 12;
const INIT_PRODUCER_ID_VERSION: i16 = 4;
const LIST_OFFSETS_VERSION: i16 = 7;
/// ListOffsets' "earliest" timestamp: the log start offset.
const EARLIEST: i64 = -2;
/// Largest reply read (a fetch asks for less).
const REPLY_BYTES_MAX: usize = 64 << 20;
/// How long a produce may wait for acks=all, as Kafka's `request.timeout.ms` default.
const PRODUCE_TIMEOUT_MS: i32 = 30_000;

#[derive(Debug)]
struct Conn {
    stream: BufStream<TcpStream>,
    next_id: i32,
}

impl Conn {
    async fn connect(addr: &str) -> anyhow::Result<Self> {
        let s = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to Kafka listener {addr}"))?;
        s.set_nodelay(true)?;
        Ok(Self {
            stream: BufStream::new(s),
            next_id: 0,
        })
    }

    async fn send<Q: Encodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Q,
    ) -> anyhow::Result<i32> {
        self.next_id = self.next_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.next_id)
            .with_client_id(Some(StrBytes::from_static_str("collector-bench")));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header.encode(&mut buf, key.request_header_version(version))?;
        req.encode(&mut buf, version)?;
        let len = i32::try_from(buf.len() - 4)?;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        self.stream.write_all(&buf).await?;
        self.stream.flush().await?;
        Ok(self.next_id)
    }

    async fn call<Q: Encodable, R: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Q,
    ) -> anyhow::Result<R> {
        let id = self.send(key, version, req).await?;
        let len = usize::try_from(self.stream.read_i32().await?)
            .map_err(|_| anyhow!("negative reply length"))?;
        if len > REPLY_BYTES_MAX {
            bail!("reply of {len} bytes");
        }
        let mut frame = vec![0u8; len];
        self.stream.read_exact(&mut frame).await?;
        let mut frame = Bytes::from(frame);
        let h = ResponseHeader::decode(&mut frame, key.response_header_version(version))?;
        if h.correlation_id != id {
            bail!("reply {} to request {id}", h.correlation_id);
        }
        let reply = R::decode(&mut frame, version)?;
        if frame.has_remaining() {
            bail!("{} bytes after the {key:?} reply", frame.remaining());
        }
        Ok(reply)
    }
}

/// A Kafka client for one topic: partition leaders from Metadata, a connection per broker.
#[derive(Debug)]
pub struct KafkaLoad {
    bootstrap: String,
    topic: String,
    brokers: HashMap<i32, String>,
    leaders: HashMap<i32, i32>,
    conns: HashMap<i32, Conn>,
}

impl KafkaLoad {
    pub async fn connect(bootstrap: &str, topic: &str) -> anyhow::Result<Self> {
        let mut k = Self {
            bootstrap: bootstrap.to_owned(),
            topic: topic.to_owned(),
            brokers: HashMap::new(),
            leaders: HashMap::new(),
            conns: HashMap::new(),
        };
        k.refresh().await?;
        Ok(k)
    }

    /// Reloads brokers and partition leaders from the bootstrap address.
    pub async fn refresh(&mut self) -> anyhow::Result<()> {
        let mut c = Conn::connect(&self.bootstrap).await?;
        let req = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
                TopicName(StrBytes::from_string(self.topic.clone())),
            ))]));
        let m: MetadataResponse = c.call(ApiKey::Metadata, METADATA_VERSION, &req).await?;
        self.brokers = m
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
            .collect();
        self.leaders = m
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| (p.partition_index, p.leader_id.0))
            .collect();
        self.conns.clear();
        Ok(())
    }

    async fn conn_for(&mut self, partition: i32) -> anyhow::Result<&mut Conn> {
        let leader = *self
            .leaders
            .get(&partition)
            .ok_or_else(|| anyhow!("no leader known for partition {partition}"))?;
        if !self.conns.contains_key(&leader) {
            let addr = self
                .brokers
                .get(&leader)
                .ok_or_else(|| anyhow!("broker {leader} has no address"))?
                .clone();
            self.conns.insert(leader, Conn::connect(&addr).await?);
        }
        self.conns
            .get_mut(&leader)
            .ok_or_else(|| anyhow!("connection to {leader} vanished"))
    }

    pub async fn producer_id(&mut self) -> anyhow::Result<i64> {
        let c = self.conn_for(0).await?;
        let r: InitProducerIdResponse = c
            .call(
                ApiKey::InitProducerId,
                INIT_PRODUCER_ID_VERSION,
                &InitProducerIdRequest::default().with_transaction_timeout_ms(-1),
            )
            .await?;
        if r.error_code != 0 {
            bail!("InitProducerId: error {}", r.error_code);
        }
        Ok(r.producer_id.0)
    }

    /// Produces one batch; `Err` names the Kafka error (the caller counts it and goes on).
    pub async fn produce(&mut self, partition: u32, acks: i16, batch: Bytes) -> Result<(), String> {
        let p = i32::try_from(partition).map_err(|e| e.to_string())?;
        let req = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(PRODUCE_TIMEOUT_MS)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(self.topic.clone())))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(p)
                            .with_records(Some(batch)),
                    ]),
            ]);
        let result = async {
            let c = self.conn_for(p).await?;
            if acks == 0 {
                c.send(ApiKey::Produce, PRODUCE_VERSION, &req).await?;
                return Ok(0);
            }
            let r: ProduceResponse = c.call(ApiKey::Produce, PRODUCE_VERSION, &req).await?;
            Ok::<i16, anyhow::Error>(
                r.responses
                    .first()
                    .and_then(|t| t.partition_responses.first())
                    .map_or(-1, |pr| pr.error_code),
            )
        }
        .await;
        match result {
            Ok(0) => Ok(()),
            Ok(code) => {
                let _ = self.refresh().await;
                Err(kafka_protocol::error::ResponseError::try_from_code(code)
                    .map_or_else(|| format!("kafka_{code}"), |e| format!("{e:?}")))
            }
            Err(e) => {
                let _ = self.refresh().await;
                Err(format!("connection: {e}"))
            }
        }
    }

    /// Fetches from `offset` of `partition` (at most `max_bytes`): the records bytes and
    /// the high watermark.
    pub async fn fetch(
        &mut self,
        partition: u32,
        offset: u64,
        max_bytes: i32,
    ) -> anyhow::Result<(Bytes, u64)> {
        let p = i32::try_from(partition)?;
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(self.topic.clone())))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(p)
                            .with_current_leader_epoch(-1)
                            .with_fetch_offset(i64::try_from(offset)?)
                            .with_last_fetched_epoch(-1)
                            .with_log_start_offset(-1)
                            .with_partition_max_bytes(max_bytes),
                    ]),
            ]);
        let c = self.conn_for(p).await?;
        let r: FetchResponse = c.call(ApiKey::Fetch, FETCH_VERSION, &req).await?;
        let pd = r
            .responses
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| anyhow!("empty fetch reply"))?;
        if pd.error_code != 0 {
            bail!("fetch of partition {partition}: error {}", pd.error_code);
        }
        Ok((
            pd.records.clone().unwrap_or_default(),
            u64::try_from(pd.high_watermark).unwrap_or(0),
        ))
    }

    /// The log start offset of `partition` (ListOffsets, earliest).
    pub async fn earliest(&mut self, partition: u32) -> anyhow::Result<u64> {
        let p = i32::try_from(partition)?;
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(self.topic.clone())))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(p)
                            .with_current_leader_epoch(-1)
                            .with_timestamp(EARLIEST),
                    ]),
            ]);
        let c = self.conn_for(p).await?;
        let r: ListOffsetsResponse = c
            .call(ApiKey::ListOffsets, LIST_OFFSETS_VERSION, &req)
            .await?;
        let pr = r
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| anyhow!("empty ListOffsets reply"))?;
        if pr.error_code != 0 {
            bail!(
                "ListOffsets of partition {partition}: error {}",
                pr.error_code
            );
        }
        Ok(u64::try_from(pr.offset)?)
    }

    /// The topic's partitions, in order.
    pub fn partitions(&self) -> Vec<u32> {
        let mut ps: Vec<u32> = self
            .leaders
            .keys()
            .filter_map(|p| u32::try_from(*p).ok())
            .collect();
        ps.sort_unstable();
        ps
    }
}
