//! SaslHandshake / SaslAuthenticate (the exchange itself is `sasl`), and DescribeAcls /
//! CreateAcls / DeleteAcls translated onto the broker's ACL service (the same one
//! `/v1/acls` uses).

use api::acls::{Acl, AclFilter, Operation, PatternType, Permission, ResourceType};
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::sasl::{Exchange, MECHANISMS, Mechanism, Step};
use super::{Conn, KafkaServer, Who, errors};

/// How often failed SASL authentications are logged.
const FAILURE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

static FAILURE_LOG: std::sync::LazyLock<crate::server::listener::RateLimitedLog> =
    std::sync::LazyLock::new(Default::default);

pub fn sasl_handshake(
    s: &KafkaServer,
    conn: &mut Conn,
    r: SaslHandshakeRequest,
) -> SaslHandshakeResponse {
    let offered: Vec<StrBytes> = if s.sasl.is_some() {
        MECHANISMS
            .iter()
            .map(|m| StrBytes::from_static_str(m))
            .collect()
    } else {
        Vec::new()
    };
    let reply = SaslHandshakeResponse::default().with_mechanisms(offered);
    if s.sasl.is_none() {
        return reply.with_error_code(E::IllegalSaslState.code());
    }
    if !matches!(conn.sasl, Exchange::Start) {
        return reply.with_error_code(E::IllegalSaslState.code());
    }
    match Mechanism::from_name(r.mechanism.as_str()) {
        Some(m) => {
            conn.sasl = Exchange::Chosen(m);
            reply
        }
        None => reply.with_error_code(E::UnsupportedSaslMechanism.code()),
    }
}

pub fn sasl_authenticate(
    s: &KafkaServer,
    who: &Who,
    conn: &mut Conn,
    r: SaslAuthenticateRequest,
) -> SaslAuthenticateResponse {
    let Some(users) = &s.sasl else {
        conn.close_after_reply = true;
        return SaslAuthenticateResponse::default().with_error_code(E::IllegalSaslState.code());
    };
    // PBKDF2 is deliberately slow: off the async workers.
    match tokio::task::block_in_place(|| conn.sasl.step(users, &r.auth_bytes)) {
        Ok(Step::Continue(bytes)) => {
            SaslAuthenticateResponse::default().with_auth_bytes(bytes.into())
        }
        Ok(Step::Authenticated(bytes, principal)) => {
            tracing::debug!(peer = %who.host, %principal, "Kafka SASL authentication");
            conn.principal = principal;
            conn.authenticated = true;
            SaslAuthenticateResponse::default().with_auth_bytes(bytes.into())
        }
        Err(e) => {
            s.broker.metrics.authentication_failures.inc();
            if FAILURE_LOG.allow(FAILURE_LOG_EVERY) {
                tracing::warn!(peer = %who.host, reason = %e, "Kafka SASL authentication failed");
            }
            conn.close_after_reply = true;
            SaslAuthenticateResponse::default()
                .with_error_code(E::SaslAuthenticationFailed.code())
                .with_error_message(Some(StrBytes::from_string(e.to_string())))
        }
    }
}

// Kafka's codes for the ACL enums.

fn resource_type(c: i8) -> Option<ResourceType> {
    match c {
        2 => Some(ResourceType::Topic),
        3 => Some(ResourceType::Group),
        4 => Some(ResourceType::Cluster),
        5 => Some(ResourceType::TransactionalId),
        _ => None,
    }
}

fn resource_type_code(t: ResourceType) -> i8 {
    match t {
        ResourceType::Topic => 2,
        ResourceType::Group => 3,
        ResourceType::Cluster => 4,
        ResourceType::TransactionalId => 5,
    }
}

fn pattern(c: i8) -> Option<PatternType> {
    match c {
        3 => Some(PatternType::Literal),
        4 => Some(PatternType::Prefixed),
        _ => None,
    }
}

fn pattern_code(p: PatternType) -> i8 {
    match p {
        PatternType::Literal => 3,
        PatternType::Prefixed => 4,
    }
}

fn operation(c: i8) -> Option<Operation> {
    Some(match c {
        2 => Operation::All,
        3 => Operation::Read,
        4 => Operation::Write,
        5 => Operation::Create,
        6 => Operation::Delete,
        7 => Operation::Alter,
        8 => Operation::Describe,
        9 => Operation::ClusterAction,
        10 => Operation::DescribeConfigs,
        11 => Operation::AlterConfigs,
        12 => Operation::IdempotentWrite,
        _ => return None,
    })
}

fn operation_code(o: Operation) -> i8 {
    match o {
        Operation::All => 2,
        Operation::Read => 3,
        Operation::Write => 4,
        Operation::Create => 5,
        Operation::Delete => 6,
        Operation::Alter => 7,
        Operation::Describe => 8,
        Operation::ClusterAction => 9,
        Operation::DescribeConfigs => 10,
        Operation::AlterConfigs => 11,
        Operation::IdempotentWrite => 12,
    }
}

fn permission(c: i8) -> Option<Permission> {
    match c {
        2 => Some(Permission::Deny),
        3 => Some(Permission::Allow),
        _ => None,
    }
}

fn permission_code(p: Permission) -> i8 {
    match p {
        Permission::Deny => 2,
        Permission::Allow => 3,
    }
}

/// A Kafka ACL filter (ANY = 1 matches everything; MATCH = 2 is taken as ANY for the
/// pattern). `None`: a code that matches nothing we store (UNKNOWN = 0 and the like).
#[allow(clippy::too_many_arguments)]
fn filter(
    rt: i8,
    name: Option<&StrBytes>,
    pt: i8,
    principal: Option<&StrBytes>,
    host: Option<&StrBytes>,
    op: i8,
    perm: i8,
) -> Result<AclFilter, String> {
    let any = |c: i8| c == 1;
    Ok(AclFilter {
        resource_type: if any(rt) {
            None
        } else {
            Some(resource_type(rt).ok_or(format!("resource type {rt}"))?)
        },
        resource_name: name.map(|n| n.to_string()),
        pattern_type: if pt == 2 {
            return Err("pattern type MATCH is not supported: use ANY, LITERAL or PREFIXED".into());
        } else if any(pt) {
            None
        } else {
            Some(pattern(pt).ok_or(format!("pattern type {pt}"))?)
        },
        principal: principal.map(|p| p.to_string()),
        host: host.map(|h| h.to_string()),
        operation: if any(op) {
            None
        } else {
            Some(operation(op).ok_or(format!("operation {op}"))?)
        },
        permission: if any(perm) {
            None
        } else {
            Some(permission(perm).ok_or(format!("permission {perm}"))?)
        },
    })
}

pub fn describe(s: &KafkaServer, who: &Who, r: DescribeAclsRequest) -> DescribeAclsResponse {
    let f = match filter(
        r.resource_type_filter,
        r.resource_name_filter.as_ref(),
        r.pattern_type_filter,
        r.principal_filter.as_ref(),
        r.host_filter.as_ref(),
        r.operation,
        r.permission_type,
    ) {
        Ok(f) => f,
        Err(why) => {
            return DescribeAclsResponse::default()
                .with_error_code(E::InvalidRequest.code())
                .with_error_message(Some(StrBytes::from_string(why)));
        }
    };
    match s.broker.acls(&who.caller, &f) {
        Ok(list) => {
            // Grouped by resource, as Kafka answers.
            let mut by: std::collections::BTreeMap<(ResourceType, String, PatternType), Vec<&Acl>> =
                Default::default();
            for a in &list.acls {
                by.entry((a.resource_type, a.resource_name.clone(), a.pattern_type))
                    .or_default()
                    .push(a);
            }
            let resources = by
                .into_iter()
                .map(|((t, n, p), acls)| {
                    DescribeAclsResource::default()
                        .with_resource_type(resource_type_code(t))
                        .with_resource_name(StrBytes::from_string(n))
                        .with_pattern_type(pattern_code(p))
                        .with_acls(
                            acls.into_iter()
                                .map(|a| {
                                    AclDescription::default()
                                        .with_principal(StrBytes::from_string(a.principal.clone()))
                                        .with_host(StrBytes::from_string(a.host.clone()))
                                        .with_operation(operation_code(a.operation))
                                        .with_permission_type(permission_code(a.permission))
                                })
                                .collect(),
                        )
                })
                .collect();
            DescribeAclsResponse::default().with_resources(resources)
        }
        Err(e) => DescribeAclsResponse::default()
            .with_error_code(errors::code(&e))
            .with_error_message(Some(StrBytes::from_string(e.to_string()))),
    }
}

pub async fn create(s: &KafkaServer, who: &Who, r: CreateAclsRequest) -> CreateAclsResponse {
    let mut results = Vec::new();
    for c in &r.creations {
        let acl = (|| {
            Some(Acl {
                principal: c.principal.to_string(),
                host: c.host.to_string(),
                resource_type: resource_type(c.resource_type)?,
                resource_name: c.resource_name.to_string(),
                pattern_type: pattern(c.resource_pattern_type)?,
                operation: operation(c.operation)?,
                permission: permission(c.permission_type)?,
            })
        })();
        let result = match acl {
            None => AclCreationResult::default()
                .with_error_code(E::InvalidRequest.code())
                .with_error_message(Some(StrBytes::from_static_str(
                    "unknown resource type, pattern, operation or permission",
                ))),
            Some(a) => match s.broker.create_acls(&who.caller, vec![a]).await {
                Ok(_) => AclCreationResult::default(),
                Err(e) => AclCreationResult::default()
                    .with_error_code(errors::code(&e))
                    .with_error_message(Some(StrBytes::from_string(e.to_string()))),
            },
        };
        results.push(result);
    }
    CreateAclsResponse::default().with_results(results)
}

pub async fn delete(s: &KafkaServer, who: &Who, r: DeleteAclsRequest) -> DeleteAclsResponse {
    let mut results = Vec::new();
    for f in &r.filters {
        let parsed = filter(
            f.resource_type_filter,
            f.resource_name_filter.as_ref(),
            f.pattern_type_filter,
            f.principal_filter.as_ref(),
            f.host_filter.as_ref(),
            f.operation,
            f.permission_type,
        );
        let result = match parsed {
            Err(why) => DeleteAclsFilterResult::default()
                .with_error_code(E::InvalidRequest.code())
                .with_error_message(Some(StrBytes::from_string(why))),
            Ok(filter) => match s.broker.delete_acls(&who.caller, filter).await {
                Ok(list) => DeleteAclsFilterResult::default().with_matching_acls(
                    list.acls
                        .into_iter()
                        .map(|a| {
                            DeleteAclsMatchingAcl::default()
                                .with_resource_type(resource_type_code(a.resource_type))
                                .with_resource_name(StrBytes::from_string(a.resource_name))
                                .with_pattern_type(pattern_code(a.pattern_type))
                                .with_principal(StrBytes::from_string(a.principal))
                                .with_host(StrBytes::from_string(a.host))
                                .with_operation(operation_code(a.operation))
                                .with_permission_type(permission_code(a.permission))
                        })
                        .collect(),
                ),
                Err(e) => DeleteAclsFilterResult::default()
                    .with_error_code(errors::code(&e))
                    .with_error_message(Some(StrBytes::from_string(e.to_string()))),
            },
        };
        results.push(result);
    }
    DeleteAclsResponse::default().with_filter_results(results)
}
