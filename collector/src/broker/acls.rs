//! ACL administration: list, create and delete the ACLs kept in the Raft metadata (so every
//! node enforces the same ones, and they survive restarts). Listing needs DESCRIBE on the
//! cluster, changing them ALTER.

use api::acls::{Acl, AclFilter, AclList, CLUSTER_RESOURCE, Operation, PatternType, ResourceType};

use super::{Broker, BrokerError};
use crate::auth::Caller;
use crate::controller::state::{CommandResult, MetadataCommand};

/// Longest principal, host or resource name in an ACL.
const ACL_FIELD_MAX: usize = 255;

/// Refuses an ACL that could never match, naming what is wrong.
pub fn validate(a: &Acl) -> Result<(), BrokerError> {
    let bad = |m: String| Err(BrokerError::InvalidRequest(m));
    let principal_ok = a
        .principal
        .strip_prefix("User:")
        .or_else(|| a.principal.strip_prefix("broker:"))
        .is_some_and(|n| !n.is_empty());
    if !principal_ok {
        return bad(format!(
            "principal {:?}: use User:<name>, User:* or broker:<id>",
            a.principal
        ));
    }
    if a.host != "*" && a.host.parse::<std::net::IpAddr>().is_err() {
        return bad(format!("host {:?}: an IP address or *", a.host));
    }
    if a.resource_name.is_empty() {
        return bad("resource_name is empty".into());
    }
    if [&a.principal, &a.host, &a.resource_name]
        .iter()
        .any(|f| f.len() > ACL_FIELD_MAX || f.chars().any(char::is_control))
    {
        return bad(format!(
            "ACL fields are at most {ACL_FIELD_MAX} printable characters"
        ));
    }
    if a.resource_type == ResourceType::Cluster
        && (a.resource_name != CLUSTER_RESOURCE || a.pattern_type != PatternType::Literal)
    {
        return bad(format!(
            "the CLUSTER resource is named {CLUSTER_RESOURCE} (LITERAL)"
        ));
    }
    if a.pattern_type == PatternType::Prefixed && a.resource_name == "*" {
        return bad("a PREFIXED pattern of * matches names starting with *; use LITERAL *".into());
    }
    Ok(())
}

impl Broker {
    fn authorize_cluster(&self, caller: &Caller, op: Operation) -> Result<(), BrokerError> {
        self.authorize(caller, op, ResourceType::Cluster, CLUSTER_RESOURCE)
    }

    /// The ACLs `filter` matches.
    pub fn acls(&self, caller: &Caller, filter: &AclFilter) -> Result<AclList, BrokerError> {
        self.authorize_cluster(caller, Operation::Describe)?;
        Ok(AclList {
            acls: self
                .controller
                .metadata()
                .acls
                .iter()
                .filter(|a| filter.matches(a))
                .cloned()
                .collect(),
        })
    }

    /// Adds ACLs (all of them or, if one is invalid, none); returns them.
    pub async fn create_acls(
        &self,
        caller: &Caller,
        acls: Vec<Acl>,
    ) -> Result<AclList, BrokerError> {
        self.authorize_cluster(caller, Operation::Alter)?;
        if acls.is_empty() {
            return Err(BrokerError::InvalidRequest("acls is empty".into()));
        }
        let mut acls = acls;
        for a in &mut acls {
            validate(a)?;
            // Stored as the callers' addresses are compared: canonical.
            a.host = crate::auth::canonical_host(&a.host);
        }
        match self
            .controller
            .propose(MetadataCommand::CreateAcls { acls: acls.clone() })
            .await?
        {
            CommandResult::Refused(e) => Err(e.into()),
            _ => Ok(AclList { acls }),
        }
    }

    /// Removes every ACL `filter` matches; returns the ones removed.
    pub async fn delete_acls(
        &self,
        caller: &Caller,
        filter: AclFilter,
    ) -> Result<AclList, BrokerError> {
        self.authorize_cluster(caller, Operation::Alter)?;
        match self
            .controller
            .propose(MetadataCommand::DeleteAcls { filter })
            .await?
        {
            CommandResult::AclsDeleted(acls) => Ok(AclList { acls }),
            CommandResult::Refused(e) => Err(e.into()),
            other => Err(BrokerError::Internal(format!(
                "unexpected result of DeleteAcls: {other:?}"
            ))),
        }
    }
}
