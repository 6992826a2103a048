//! Furrow's DHCP helper.
//!
//! - [`frame`]: raw Ethernet/IPv4/UDP frames carrying DHCP, parsed and built
//!   with every length checked (AF_PACKET sockets read and write these).
//! - [`server`]: the sans-IO server core: [`server::decide`] turns a client
//!   message plus a snapshot of lease state into a lease change and a reply;
//!   netd commits the change (compare-and-swap) before sending the reply.
//! - [`client`]: an async client over AF_PACKET, for VIPs taken from DHCP and
//!   for discovering a network's subnet and gateway.
//! - [`socket`]: the AF_PACKET socket both use.
//!
//! Encoding and decoding of the DHCP message itself is dhcproto's; option
//! bounds, ordering and the protocol rules are ours ([`codec`]).

pub mod client;
pub mod codec;
pub mod frame;
pub mod server;
pub mod socket;

pub use dhcproto;
pub use furrow_api::MacAddr;
