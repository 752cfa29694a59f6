//! Frames to requests, with no server at hand: the size-prefix-free frame is checked
//! (API key, version served) and decoded into a typed [`Request`]. Pure, so the fuzz
//! target (`fuzz/`) drives exactly the code the listener runs.

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ConsumerGroupDescribeRequest, ConsumerGroupHeartbeatRequest,
    CreatePartitionsRequest, CreateTopicsRequest, DeleteGroupsRequest, DeleteTopicsRequest,
    DescribeClusterRequest, DescribeConfigsRequest, DescribeGroupsRequest,
    DescribeProducersRequest, FetchRequest, FindCoordinatorRequest, HeartbeatRequest,
    InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest,
    ListOffsetsRequest, MetadataRequest, OffsetCommitRequest, OffsetFetchRequest,
    OffsetForLeaderEpochRequest, ProduceRequest, RequestHeader, SyncGroupRequest,
};
use kafka_protocol::messages::{
    CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest, SaslAuthenticateRequest,
    SaslHandshakeRequest,
};
use kafka_protocol::protocol::Decodable;

use super::{Close, Req, versions};

/// A decoded request body, one variant per API served.
#[derive(Debug)]
pub enum Request {
    ApiVersions(ApiVersionsRequest),
    Metadata(MetadataRequest),
    Produce(ProduceRequest),
    Fetch(FetchRequest),
    ListOffsets(ListOffsetsRequest),
    InitProducerId(InitProducerIdRequest),
    FindCoordinator(FindCoordinatorRequest),
    OffsetCommit(OffsetCommitRequest),
    OffsetFetch(OffsetFetchRequest),
    JoinGroup(JoinGroupRequest),
    SyncGroup(SyncGroupRequest),
    Heartbeat(HeartbeatRequest),
    LeaveGroup(LeaveGroupRequest),
    OffsetForLeaderEpoch(OffsetForLeaderEpochRequest),
    ListGroups(ListGroupsRequest),
    DescribeGroups(DescribeGroupsRequest),
    DescribeCluster(DescribeClusterRequest),
    DescribeConfigs(DescribeConfigsRequest),
    DeleteGroups(DeleteGroupsRequest),
    DescribeProducers(DescribeProducersRequest),
    CreatePartitions(CreatePartitionsRequest),
    CreateTopics(CreateTopicsRequest),
    DeleteTopics(DeleteTopicsRequest),
    ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest),
    ConsumerGroupDescribe(ConsumerGroupDescribeRequest),
    SaslHandshake(SaslHandshakeRequest),
    SaslAuthenticate(SaslAuthenticateRequest),
    DescribeAcls(DescribeAclsRequest),
    CreateAcls(CreateAclsRequest),
    DeleteAcls(DeleteAclsRequest),
}

/// What one frame holds.
#[derive(Debug)]
pub enum Frame {
    Request {
        req: Req,
        /// The client id from the request header (empty when absent).
        client_id: String,
        body: Box<Request>,
    },
    /// An ApiVersions request of a version too new to decode: answered in v0 framing with
    /// the ranges served, so the client retries with one it shares.
    TooNewApiVersions { correlation_id: i32 },
}

/// Decodes one frame (without its size prefix). Never panics on any bytes.
pub fn decode_frame(frame: Bytes) -> Result<Frame, Close> {
    if frame.len() < 8 {
        return Err(Close::Short(frame.len()));
    }
    let mut peek = &frame[..8];
    let key = peek.get_i16();
    let version = peek.get_i16();
    let correlation_id = peek.get_i32();
    if key == ApiKey::ApiVersions as i16 && !versions::served(ApiKey::ApiVersions, version) {
        return Ok(Frame::TooNewApiVersions { correlation_id });
    }
    let api = ApiKey::try_from(key).map_err(|()| Close::UnknownKey(key))?;
    let Some(range) = versions::range(api) else {
        return Err(Close::NotServed(api));
    };
    if version < range.0 || version > range.1 {
        return Err(Close::Version {
            key: api,
            version,
            min: range.0,
            max: range.1,
        });
    }
    let mut buf = frame;
    let header =
        RequestHeader::decode(&mut buf, api.request_header_version(version)).map_err(|e| {
            Close::Decode {
                key: api,
                version,
                message: format!("request header: {e}"),
            }
        })?;
    let req = Req {
        key: api,
        version,
        correlation_id,
    };
    let body = match api {
        ApiKey::ApiVersions => Request::ApiVersions(req.decode(&mut buf)?),
        ApiKey::Metadata => Request::Metadata(req.decode(&mut buf)?),
        ApiKey::Produce => Request::Produce(req.decode(&mut buf)?),
        ApiKey::Fetch => Request::Fetch(req.decode(&mut buf)?),
        ApiKey::ListOffsets => Request::ListOffsets(req.decode(&mut buf)?),
        ApiKey::InitProducerId => Request::InitProducerId(req.decode(&mut buf)?),
        ApiKey::FindCoordinator => Request::FindCoordinator(req.decode(&mut buf)?),
        ApiKey::OffsetCommit => Request::OffsetCommit(req.decode(&mut buf)?),
        ApiKey::OffsetFetch => Request::OffsetFetch(req.decode(&mut buf)?),
        ApiKey::JoinGroup => Request::JoinGroup(req.decode(&mut buf)?),
        ApiKey::SyncGroup => Request::SyncGroup(req.decode(&mut buf)?),
        ApiKey::Heartbeat => Request::Heartbeat(req.decode(&mut buf)?),
        ApiKey::LeaveGroup => Request::LeaveGroup(req.decode(&mut buf)?),
        ApiKey::OffsetForLeaderEpoch => Request::OffsetForLeaderEpoch(req.decode(&mut buf)?),
        ApiKey::ListGroups => Request::ListGroups(req.decode(&mut buf)?),
        ApiKey::DescribeGroups => Request::DescribeGroups(req.decode(&mut buf)?),
        ApiKey::DescribeCluster => Request::DescribeCluster(req.decode(&mut buf)?),
        ApiKey::DescribeConfigs => Request::DescribeConfigs(req.decode(&mut buf)?),
        ApiKey::DeleteGroups => Request::DeleteGroups(req.decode(&mut buf)?),
        ApiKey::DescribeProducers => Request::DescribeProducers(req.decode(&mut buf)?),
        ApiKey::CreatePartitions => Request::CreatePartitions(req.decode(&mut buf)?),
        ApiKey::CreateTopics => Request::CreateTopics(req.decode(&mut buf)?),
        ApiKey::DeleteTopics => Request::DeleteTopics(req.decode(&mut buf)?),
        ApiKey::ConsumerGroupHeartbeat => Request::ConsumerGroupHeartbeat(req.decode(&mut buf)?),
        ApiKey::ConsumerGroupDescribe => Request::ConsumerGroupDescribe(req.decode(&mut buf)?),
        ApiKey::SaslHandshake => Request::SaslHandshake(req.decode(&mut buf)?),
        ApiKey::SaslAuthenticate => Request::SaslAuthenticate(req.decode(&mut buf)?),
        ApiKey::DescribeAcls => Request::DescribeAcls(req.decode(&mut buf)?),
        ApiKey::CreateAcls => Request::CreateAcls(req.decode(&mut buf)?),
        ApiKey::DeleteAcls => Request::DeleteAcls(req.decode(&mut buf)?),
        other => return Err(Close::NotServed(other)),
    };
    Ok(Frame::Request {
        req,
        client_id: header.client_id.map(|c| c.to_string()).unwrap_or_default(),
        body: Box::new(body),
    })
}
