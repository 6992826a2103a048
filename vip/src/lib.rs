//! The floating-VIP controller: election per VIP, gratuitous ARP /
//! unsolicited NA announcement and a BGP speaker.
//!
//! Nothing is implemented here yet (see the VIP issue); this crate exists
//! so the workspace has its final shape. It exports nothing on purpose.
