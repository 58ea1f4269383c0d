//! The brokers a process may connect to: `LEDGERFLOW_AMQP_URI` is one AMQP URI, or the nodes
//! of one RabbitMQ cluster as a comma-separated list of them. [`crate::connect`] tries them in
//! the order given and takes the first that answers, so a process whose node died moves on to
//! the next at its next reconnect.
//!
//! The order is the operator's: processes given the same list all land on its first node (and
//! the quorum queues they declare get their leaders there), so a deployment that wants its
//! connections spread gives each process the list in another order, or one load-balanced name.
//!
//! Every address must name the same user and virtual host: a cluster shares both, and a
//! process must not act as another broker user depending on the node it reached (workers check
//! publishers by their broker user). A comma inside a URI (a password, a vhost) must be
//! percent-encoded (`%2C`), as the list is split on commas first.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use lapin::uri::AMQPUri;

/// The shortest connection attempt one address gets when several share the budget: a TCP and
/// AMQP handshake with a live broker takes milliseconds, so this only cuts short a host that
/// does not answer at all.
const MIN_ATTEMPT: Duration = Duration::from_millis(500);

/// One broker of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broker {
    uri: AMQPUri,
}

impl Broker {
    /// The parsed URI, credentials included.
    pub fn uri(&self) -> &AMQPUri {
        &self.uri
    }
}

/// `host:port`, for logs and errors: never the credentials.
impl fmt::Display for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.uri.authority.host, self.uri.authority.port)
    }
}

/// A parsed, non-empty list of brokers, in the order to try them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Brokers(Vec<Broker>);

/// Why a broker list was refused. Names the position of the bad address, never its text (which
/// may hold a password).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BrokerListError(String);

impl Brokers {
    /// Parses `list`: AMQP URIs separated by commas, blanks around each ignored.
    pub fn parse(list: &str) -> Result<Self, BrokerListError> {
        let mut brokers = Vec::new();
        for (i, part) in list.split(',').map(str::trim).enumerate() {
            let position = i + 1;
            if part.is_empty() {
                return Err(BrokerListError(format!("broker address {position} of the list is empty")));
            }
            let uri = AMQPUri::from_str(part)
                .map_err(|e| BrokerListError(format!("broker address {position} is not an AMQP URI: {e}")))?;
            brokers.push(Broker { uri });
        }
        let Some(first) = brokers.first().map(|b| b.uri.clone()) else {
            return Err(BrokerListError("no broker address".into()));
        };
        for (i, broker) in brokers.iter().enumerate().skip(1) {
            if broker.uri.authority.userinfo.username != first.authority.userinfo.username {
                return Err(BrokerListError(format!("broker address {} names another user than the first", i + 1)));
            }
            if broker.uri.vhost != first.vhost {
                return Err(BrokerListError(format!(
                    "broker address {} names another virtual host than the first",
                    i + 1
                )));
            }
        }
        Ok(Self(brokers))
    }

    /// In the order to try them.
    pub fn iter(&self) -> impl Iterator<Item = &Broker> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never: a list has at least one broker.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How long one address may take to connect when `budget` is the whole attempt's: an equal
    /// share, so a host that does not answer cannot use up the time of the live ones behind it,
    /// but never under half a second.
    pub fn attempt_limit(&self, budget: Duration) -> Duration {
        let share = budget / u32::try_from(self.0.len()).unwrap_or(u32::MAX);
        share.max(MIN_ATTEMPT).min(budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "amqp://lf:secret@10.0.0.1:5672/%2f";
    const B: &str = "amqp://lf:secret@10.0.0.2:5673/%2f";

    fn hosts(brokers: &Brokers) -> Vec<String> {
        brokers.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn one_uri_is_a_list_of_one() {
        let brokers = Brokers::parse(A).unwrap();
        assert_eq!(hosts(&brokers), ["10.0.0.1:5672"]);
        assert_eq!(brokers.iter().next().unwrap().uri().authority.userinfo.password, "secret");
        assert_eq!(brokers.iter().next().unwrap().uri().vhost, "/");
    }

    #[test]
    fn a_list_keeps_its_order_and_ignores_blanks_around_addresses() {
        let brokers = Brokers::parse(&format!(" {B} ,\n{A}")).unwrap();
        assert_eq!(hosts(&brokers), ["10.0.0.2:5673", "10.0.0.1:5672"]);
        assert_eq!(brokers.len(), 2);
    }

    #[test]
    fn a_percent_encoded_comma_stays_in_its_uri() {
        let brokers = Brokers::parse("amqp://lf:pa%2Css@h1:5672/%2f,amqp://lf:pa%2Css@h2:5672/%2f").unwrap();
        assert!(brokers.iter().all(|b| b.uri().authority.userinfo.password == "pa,ss"));
    }

    #[test]
    fn empty_or_malformed_addresses_are_refused_by_position_without_their_text() {
        for (list, position) in [("", "1"), (&*format!("{A},"), "2"), (&*format!("{A},,{B}"), "2")] {
            let e = Brokers::parse(list).unwrap_err().to_string();
            assert!(e.contains(&format!("address {position} ")) && e.contains("empty"), "{list:?}: {e}");
        }
        let e = Brokers::parse(&format!("{A},http://lf:secret@h:1/")).unwrap_err().to_string();
        assert!(e.contains("address 2 is not an AMQP URI"), "{e}");
        assert!(!e.contains("secret"), "the error shows no credentials: {e}");
    }

    #[test]
    fn every_address_names_the_same_user_and_vhost() {
        let e = Brokers::parse(&format!("{A},amqp://other:secret@10.0.0.2:5672/%2f")).unwrap_err();
        assert!(e.to_string().contains("address 2 names another user"), "{e}");
        let e = Brokers::parse(&format!("{A},amqp://lf:secret@10.0.0.2:5672/prod")).unwrap_err();
        assert!(e.to_string().contains("address 2 names another virtual host"), "{e}");
    }

    #[test]
    fn addresses_share_the_connect_budget_but_each_gets_a_floor() {
        let budget = Duration::from_secs(3);
        assert_eq!(Brokers::parse(A).unwrap().attempt_limit(budget), budget);
        assert_eq!(Brokers::parse(&format!("{A},{B},{A}")).unwrap().attempt_limit(budget), Duration::from_secs(1));
        let many = [A; 12].join(",");
        assert_eq!(Brokers::parse(&many).unwrap().attempt_limit(budget), MIN_ATTEMPT);
    }
}
