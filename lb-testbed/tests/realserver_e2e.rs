//! `lb-userspace realserver start|stop` (the seed's rs.sh) as an operator
//! types it, as root, in a network namespace the test makes and deletes.
//! Nothing here sends traffic: the commands' effects are read back with ip(8).

use std::process::{Command, Output};

use lb_testbed::{
    netns::{self, nsenter_net},
    topology::agent_binary,
};

const VIP_A: &str = "172.16.122.100";
const VIP_B: &str = "172.16.122.101";
/// The interface the tunnelled packets would arrive on, and its peer.
const IFACE: &str = "rs0";
const PEER: &str = "rs0p";

/// A namespace with a veth pair; stops every VIP and deletes it on drop.
struct RealServerHost {
    ns: String,
}

impl RealServerHost {
    fn create(tag: &str) -> Self {
        let host = Self {
            ns: format!("lbr{}{tag}", std::process::id()),
        };
        netns::create_with_veth(&host.ns, IFACE, PEER).unwrap();
        host
    }

    /// `lb-userspace realserver ARGS` inside, keeping the host's bpffs.
    fn realserver(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(nsenter_net(&self.ns))
            .arg(agent_binary().unwrap())
            .arg("realserver")
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.realserver(args);
        assert!(
            out.status.success(),
            "realserver {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.ns.as_str()];
        full.extend_from_slice(args);
        String::from_utf8_lossy(&netns::ip(&full).unwrap().stdout).into_owned()
    }

    /// An XDP program is attached to `IFACE` (ip link prints its id).
    fn decap_attached(&self) -> bool {
        self.ip(&["link", "show", "dev", IFACE])
            .contains("prog/xdp")
    }

    fn vip_on_lo(&self, vip: &str) -> bool {
        self.ip(&["-4", "addr", "show", "dev", "lo"])
            .contains(&format!("inet {vip}/32"))
    }
}

impl Drop for RealServerHost {
    fn drop(&mut self) {
        for vip in [VIP_A, VIP_B] {
            let _ = self.realserver(&["stop", "--vip", vip]);
        }
        netns::destroy_namespace(&self.ns);
    }
}

/// The README's `realserver stop --vip V --mode tun --iface IF` (start's
/// flags) is accepted and undoes start.
#[test]
fn stop_takes_the_flags_start_took() {
    let host = RealServerHost::create("flags");
    let tun = ["--vip", VIP_A, "--mode", "tun", "--iface", IFACE];
    host.ok(&[&["start"][..], &tun].concat());
    assert!(host.decap_attached());
    assert!(host.vip_on_lo(VIP_A));
    let out = host.ok(&[&["stop"][..], &tun].concat());
    assert!(out.contains("RealServer Stopped"), "{out}");
    assert!(!host.decap_attached());
    assert!(!host.vip_on_lo(VIP_A));
}

/// A VIP started here and taken off lo by hand is still this namespace's:
/// start refuses (stop first) instead of claiming its namespace is gone.
#[test]
fn a_live_namespace_is_never_called_gone() {
    let host = RealServerHost::create("live");
    host.ok(&["start", "--vip", VIP_A]);
    host.ip(&["addr", "del", &format!("{VIP_A}/32"), "dev", "lo"]);
    let again = host.realserver(&["start", "--vip", VIP_A]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success(), "{stderr}");
    assert!(stderr.contains("already started"), "{stderr}");
    assert!(!stderr.contains("gone"), "{stderr}");
    host.ok(&["stop", "--vip", VIP_A]);
}

/// The interface is deleted and made again: the pinned rs_decap link is
/// defunct (attached nowhere). The next start must attach a new one, with
/// the VIP started before it still decapsulated, not print "Start OK" over
/// an interface without decapsulation.
#[test]
fn a_defunct_decap_pin_is_replaced() {
    let host = RealServerHost::create("defunct");
    host.ok(&["start", "--vip", VIP_A, "--mode", "tun", "--iface", IFACE]);
    assert!(host.decap_attached());
    host.ip(&["link", "del", IFACE]);
    host.ip(&["link", "add", IFACE, "type", "veth", "peer", "name", PEER]);
    host.ip(&["link", "set", IFACE, "up"]);
    assert!(!host.decap_attached());
    let out = host.ok(&["start", "--vip", VIP_B, "--mode", "tun", "--iface", IFACE]);
    assert!(out.contains("defunct"), "{out}");
    assert!(host.decap_attached(), "{out}");
    // VIP_A went into the new program's map too: stopping B keeps it attached.
    host.ok(&["stop", "--vip", VIP_B]);
    assert!(host.decap_attached());
    host.ok(&["stop", "--vip", VIP_A]);
    assert!(!host.decap_attached());
}
