//! A loopback address of its own for each DC, and the Samba services it can run there.
//!
//! AD's ports are fixed (389, 636, 88, 445, …), so two DCs can only live side by side on
//! different addresses. Linux routes all of 127.0.0.0/8 to `lo`, so any 127.x.y.z can be bound
//! without adding it to the interface. Samba, though, only listens on addresses it believes an
//! interface has: `interfaces = 127.77.0.1/32` finds none (its network and broadcast address
//! are the address itself, which Samba then looks up among the real interfaces), while
//! `127.77.0.1/30` is taken as given ("fake up the interface definition"). So each DC gets
//! the first usable address of a /30 block under 127.77.0.0/16, and nothing is added to `lo`
//! unless the machine does not route 127/8 there (then `ip addr add ADDR/32 dev lo`, undone
//! when the DC goes away).
//!
//! Allocation across processes: a DC holds an exclusive `flock` on
//! `ROOT/locks/ADDR.lock` for as long as it lives (the kernel drops it when the process dies,
//! however it dies), so test binaries and `samba-dc start` processes running at once never pick
//! the same address.
//!
//! A port can also be taken by something that is not a fixture: Debian's `samba`/`winbind`
//! packages start `smbd`/`nmbd` from their init scripts when nothing stops them (a container
//! without `policy-rc.d`), and those listen on 0.0.0.0:445/139/137/138. Such a port is taken on
//! every address; the fixture then runs the DC without the services that need it, and says so,
//! rather than fail. Only LDAP is indispensable.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::Path;
use std::process::Command;

use crate::error::{Error, Result};

/// A Samba service of `server services` and the ports it listens on.
pub(crate) struct Service {
    pub name: &'static str,
    tcp: &'static [u16],
    udp: &'static [u16],
}

/// What a DC runs. Left out on purpose: `dns` and `dnsupdate` (provisioned with
/// `--dns-backend=NONE`), `nbt` and `wrepl` (NetBIOS naming and WINS, which nothing here uses
/// and whose broadcast sockets clash with `nmbd`), `drepl`, `kcc` (replication between DCs:
/// there is one; `kcc` also runs a Python program every few minutes) and `ntp_signd`.
pub(crate) const SERVICES: &[Service] = &[
    Service {
        name: "ldap",
        tcp: &[389, 636, 3268, 3269],
        udp: &[],
    },
    Service {
        name: "cldap",
        tcp: &[],
        udp: &[389],
    },
    Service {
        name: "kdc",
        tcp: &[88, 464],
        udp: &[88, 464],
    },
    Service {
        name: "rpc",
        tcp: &[135],
        udp: &[],
    },
    Service {
        name: "winbindd",
        tcp: &[],
        udp: &[],
    },
    Service {
        name: "s3fs",
        tcp: &[445, 139],
        udp: &[],
    },
];

const ESSENTIAL: &str = "ldap";

/// An address this process holds for one DC.
#[derive(Debug)]
pub(crate) struct Lease {
    pub addr: Ipv4Addr,
    /// The services whose ports are free at `addr`.
    pub services: Vec<&'static str>,
    /// Why some services were left out; empty when none was.
    pub notes: Vec<String>,
    /// `ip addr add` was needed, so `ip addr del` is due at the end.
    pub added_to_lo: bool,
    /// The held lock; dropping it frees the address.
    _lock: File,
}

/// How many /30 blocks of 127.77.0.0/16 are tried.
const CANDIDATES: u32 = 256;

/// The n-th candidate: 127.77.0.1, 127.77.0.5, … (the first host of each /30 block).
pub(crate) fn candidate(n: u32) -> Ipv4Addr {
    let host = n * 4 + 1;
    Ipv4Addr::new(127, 77, (host >> 8) as u8, (host & 0xff) as u8)
}

/// An address in no candidate block: a port busy here as well is busy on every address.
const CANARY: Ipv4Addr = Ipv4Addr::new(127, 78, 253, 1);

pub(crate) fn lock_path(root: &Path, addr: Ipv4Addr) -> std::path::PathBuf {
    root.join("locks").join(format!("{addr}.lock"))
}

/// Tries to take the lock of `addr`; `None` while another DC holds it.
pub(crate) fn try_lock(root: &Path, addr: Ipv4Addr) -> Result<Option<File>> {
    let path = lock_path(root, addr);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(Error::io(format!("open {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(Error::io(format!("lock {}", path.display()))(e)),
    }
}

/// Finds a free address, locks it and works out which services can run there.
pub(crate) fn lease(root: &Path) -> Result<Lease> {
    fs::create_dir_all(root.join("locks")).map_err(Error::io(format!(
        "create {}",
        root.join("locks").display()
    )))?;
    let mut everywhere: Option<BTreeSet<Port>> = None;
    let mut skipped = Vec::new();
    for n in 0..CANDIDATES {
        let addr = candidate(n);
        let Some(lock) = try_lock(root, addr)? else {
            continue;
        };
        let mut added_to_lo = false;
        let busy = match busy_ports(addr) {
            Ok(busy) => busy,
            Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => {
                add_to_lo(addr)?;
                added_to_lo = true;
                busy_ports(addr).map_err(Error::io(format!("bind {addr}")))?
            }
            Err(e) => return Err(Error::io(format!("bind {addr}"))(e)),
        };
        if busy.is_empty() {
            let services = SERVICES.iter().map(|s| s.name).collect();
            return Ok(Lease {
                addr,
                services,
                notes: Vec::new(),
                added_to_lo,
                _lock: lock,
            });
        }
        let everywhere = match &everywhere {
            Some(set) => set,
            None => everywhere.insert(busy_ports(CANARY).unwrap_or_default()),
        };
        if !busy.is_subset(everywhere) {
            // Something bound this very address: try the next one.
            if added_to_lo {
                del_from_lo(addr);
            }
            skipped.push(format!("{addr} ({})", list(&busy)));
            continue;
        }
        // The busy ports are taken on every address: leave out what needs them.
        let mut services = Vec::new();
        let mut notes = Vec::new();
        for service in SERVICES {
            let taken: BTreeSet<Port> = service.ports().filter(|p| busy.contains(p)).collect();
            if taken.is_empty() {
                services.push(service.name);
            } else if service.name == ESSENTIAL {
                return Err(Error::NoAddress(format!(
                    "LDAP's ports {} are taken on every loopback address (is a system samba \
                     running? `ss -lntup` shows who listens)",
                    list(&taken)
                )));
            } else {
                notes.push(format!(
                    "samba-dc: {addr}: running without `{}`: {} taken on every loopback \
                     address (a system smbd/nmbd/samba started by the package's init script?)",
                    service.name,
                    list(&taken)
                ));
            }
        }
        return Ok(Lease {
            addr,
            services,
            notes,
            added_to_lo,
            _lock: lock,
        });
    }
    Err(Error::NoAddress(if skipped.is_empty() {
        format!("all {CANDIDATES} addresses of 127.77.0.0/16 are held by other DCs")
    } else {
        format!("ports in use on {}", skipped.join(", "))
    }))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Port {
    Tcp(u16),
    Udp(u16),
}

impl Service {
    fn ports(&self) -> impl Iterator<Item = Port> + '_ {
        let tcp = self.tcp.iter().map(|&p| Port::Tcp(p));
        tcp.chain(self.udp.iter().map(|&p| Port::Udp(p)))
    }
}

fn list(ports: &BTreeSet<Port>) -> String {
    let names: Vec<String> = ports
        .iter()
        .map(|p| match p {
            Port::Tcp(n) => format!("tcp/{n}"),
            Port::Udp(n) => format!("udp/{n}"),
        })
        .collect();
    names.join(" ")
}

/// The ports of [`SERVICES`] that cannot be bound at `addr`. An address the machine does not
/// have is an error of its own (`AddrNotAvailable`).
fn busy_ports(addr: Ipv4Addr) -> io::Result<BTreeSet<Port>> {
    let mut busy = BTreeSet::new();
    for port in SERVICES.iter().flat_map(Service::ports) {
        let result = match port {
            Port::Tcp(n) => TcpListener::bind(SocketAddrV4::new(addr, n)).map(drop),
            Port::Udp(n) => UdpSocket::bind(SocketAddrV4::new(addr, n)).map(drop),
        };
        match result {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                busy.insert(port);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(busy)
}

fn add_to_lo(addr: Ipv4Addr) -> Result<()> {
    crate::run::output(Command::new("ip").args(["addr", "add", &format!("{addr}/32"), "dev", "lo"]))
        .map(drop)
}

pub(crate) fn del_from_lo(addr: Ipv4Addr) {
    let _ = Command::new("ip")
        .args(["addr", "del", &format!("{addr}/32"), "dev", "lo"])
        .output();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_first_hosts_of_30_blocks() {
        assert_eq!(candidate(0), Ipv4Addr::new(127, 77, 0, 1));
        assert_eq!(candidate(1), Ipv4Addr::new(127, 77, 0, 5));
        assert_eq!(candidate(64), Ipv4Addr::new(127, 77, 1, 1));
        assert_eq!(candidate(CANDIDATES - 1), Ipv4Addr::new(127, 77, 3, 253));
    }
}
