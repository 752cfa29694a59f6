//! Access control lists on Kafka's model: who (principal, host) may do what (operation) to
//! which resource (type, name, pattern), allowed or denied.

use serde::{Deserialize, Serialize};

/// What an ACL protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ResourceType {
    Topic,
    Group,
    Cluster,
    TransactionalId,
}

/// How an ACL's resource name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PatternType {
    /// The name itself; `*` matches every name.
    Literal,
    /// Every name that starts with it.
    Prefixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
    ClusterAction,
}

impl Operation {
    /// Whether an ACL on `self` covers a request for `asked`: ALL covers everything;
    /// READ, WRITE, DELETE and ALTER imply DESCRIBE; ALTER_CONFIGS implies
    /// DESCRIBE_CONFIGS (Kafka's implications, for ALLOW entries).
    pub fn covers(self, asked: Operation) -> bool {
        self == asked
            || self == Operation::All
            || (asked == Operation::Describe
                && matches!(
                    self,
                    Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
                ))
            || (asked == Operation::DescribeConfigs && self == Operation::AlterConfigs)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Permission {
    Allow,
    Deny,
}

/// One ACL entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Acl {
    /// `User:<name>` (`User:*`: every principal), or `broker:<id>`.
    pub principal: String,
    /// The client's IP address, or `*`.
    #[serde(default = "any_host")]
    pub host: String,
    pub resource_type: ResourceType,
    /// A topic or group name (`*` with LITERAL: all), `kafka-cluster` for CLUSTER.
    pub resource_name: String,
    #[serde(default = "literal")]
    pub pattern_type: PatternType,
    pub operation: Operation,
    pub permission: Permission,
}

fn any_host() -> String {
    "*".into()
}

fn literal() -> PatternType {
    PatternType::Literal
}

/// The one CLUSTER resource's name.
pub const CLUSTER_RESOURCE: &str = "kafka-cluster";

/// Which ACLs a list or delete applies to: each field set must match exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<ResourceType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern_type: Option<PatternType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission: Option<Permission>,
}

impl AclFilter {
    pub fn matches(&self, a: &Acl) -> bool {
        self.principal.as_ref().is_none_or(|p| *p == a.principal)
            && self.host.as_ref().is_none_or(|h| *h == a.host)
            && self.resource_type.is_none_or(|t| t == a.resource_type)
            && self
                .resource_name
                .as_ref()
                .is_none_or(|n| *n == a.resource_name)
            && self.pattern_type.is_none_or(|t| t == a.pattern_type)
            && self.operation.is_none_or(|o| o == a.operation)
            && self.permission.is_none_or(|p| p == a.permission)
    }
}

/// `POST /v1/acls` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateAcls {
    pub acls: Vec<Acl>,
}

/// `GET /v1/acls` reply, and `POST /v1/acls/delete` reply (the entries removed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclList {
    pub acls: Vec<Acl>,
}
