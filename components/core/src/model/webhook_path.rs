//! The path of an operation's webhook URL. One registered for RFC 9421 also names the signer
//! (the operation's tenant and seller), so the intake checks the signature with that seller's
//! keys before it reads the operation: a forgery costs that one read. Paths without the
//! signer (every other mode, and RFC 9421 operations registered before) stay valid.

use crate::foundation::keys::valid_id;

const PREFIX: &str = "/webhooks/adcp/";

/// The tenant and seller whose signature a webhook path expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signer<'a> {
    pub tenant: &'a str,
    pub seller: &'a str,
}

pub fn webhook_path(operation_id: &str, signer: Option<Signer<'_>>) -> String {
    match signer {
        Some(s) => format!("{PREFIX}{operation_id}/{}/{}", s.tenant, s.seller),
        None => format!("{PREFIX}{operation_id}"),
    }
}

/// The operation (and signer) a webhook path names; `None` unless every part is a valid id.
pub fn parse_webhook_path(path: &str) -> Option<(&str, Option<Signer<'_>>)> {
    let mut parts = path.strip_prefix(PREFIX)?.split('/');
    let op = parts.next().filter(|p| valid_id(p))?;
    match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) => Some((op, None)),
        (Some(tenant), Some(seller), None) if valid_id(tenant) && valid_id(seller) => {
            Some((op, Some(Signer { tenant, seller })))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_and_anything_else_is_no_webhook() {
        let signer = Signer {
            tenant: "tn_1",
            seller: "ssp",
        };
        assert_eq!(
            parse_webhook_path(&webhook_path("op_1", Some(signer))),
            Some(("op_1", Some(signer)))
        );
        assert_eq!(
            parse_webhook_path(&webhook_path("op_1", None)),
            Some(("op_1", None))
        );
        for bad in [
            "/webhooks/adcp/",
            "/webhooks/adcp/op_1/tn_1",
            "/webhooks/adcp/op_1/tn_1/ssp/x",
            "/webhooks/adcp/op_1/t%2F/ssp",
            "/other/op_1",
        ] {
            assert_eq!(parse_webhook_path(bad), None, "{bad}");
        }
    }
}
