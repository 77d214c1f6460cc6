//! The seed's LVS-NAT variants of the network: one-armed (the client on
//! another subnet of the same wire) and two-armed (an outside network).

use super::*;

impl Topology {
    /// The seed's LVS-NAT network, one-armed: the client moves to another
    /// subnet (192.168.100.0/24) behind the balancer's second address, the
    /// real servers route through the balancer, and the client's curls go to
    /// the NAT VIP, the balancer's own 172.16.122.188.
    pub fn make_nat_one_armed(&mut self) -> Result<()> {
        let (client, lb) = (self.ns(Host::Client), self.ns(Host::Lb));
        ip(&["-n", &lb, "addr", "add", NAT_OUTSIDE_LB, "dev", HOST_IFACE])?;
        // IPv4 only: the client keeps its IPv6 address.
        ip(&["-n", &client, "-4", "addr", "flush", "dev", HOST_IFACE])?;
        ip(&[
            "-n",
            &client,
            "addr",
            "add",
            NAT_OUTSIDE_CLIENT,
            "dev",
            HOST_IFACE,
        ])?;
        default_route(&client, NAT_OUTSIDE_GATEWAY)?;
        self.route_real_servers_through_lb()?;
        self.service_addr = LB_IP;
        Ok(())
    }

    /// NAT66, one-armed: make_nat_one_armed over IPv6. The client moves to
    /// 2001:db8:100::/64 behind the balancer's second IPv6 address, the
    /// real servers route through the balancer's 2001:db8:122::188, which
    /// is the NAT VIP. The client keeps its IPv4 address.
    pub fn make_nat66_one_armed(&mut self) -> Result<()> {
        let (client, lb) = (self.ns(Host::Client), self.ns(Host::Lb));
        let add = |ns: &str, addr: &str| {
            // nodad: usable at once (add_host's reason).
            ip(&["-n", ns, "addr", "add", addr, "dev", HOST_IFACE, "nodad"])
        };
        add(&lb, NAT66_OUTSIDE_LB)?;
        ip(&[
            "-n", &client, "-6", "addr", "flush", "dev", HOST_IFACE, "scope", "global",
        ])?;
        add(&client, NAT66_OUTSIDE_CLIENT)?;
        default_route(&client, NAT66_OUTSIDE_GATEWAY)?;
        self.route_real_servers_through_lb()
    }

    /// LVS-NAT: the real servers answer through the balancer (both
    /// families).
    fn route_real_servers_through_lb(&self) -> Result<()> {
        for rs in [Host::Rs1, Host::Rs2] {
            default_route(&self.ns(rs), &LB_IP.to_string())?;
            default_route(&self.ns(rs), &LB_IP6.to_string())?;
        }
        Ok(())
    }

    /// LVS-NAT two-armed: a second network (192.168.200.0/24 and
    /// 2001:db8:200::/64, bridge br1) joins the client's new interface and
    /// the balancer's eth1; the real servers stay inside (br0) and route
    /// through the balancer's eth0. The agent then runs with --iface eth1
    /// --iface eth0, and the service address is the balancer's outside one
    /// (TWO_ARMED_GATEWAY6 over IPv6).
    pub fn make_nat_two_armed(&mut self) -> Result<()> {
        let (sw, client, lb) = (self.switch_ns(), self.ns(Host::Client), self.ns(Host::Lb));
        ip(&["-n", &sw, "link", "add", OUTSIDE_BRIDGE, "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", OUTSIDE_BRIDGE, "up"])?;
        for (port, ns, addr, addr6) in [
            ("v-lbo", &lb, TWO_ARMED_LB, TWO_ARMED_LB6),
            ("v-clo", &client, TWO_ARMED_CLIENT, TWO_ARMED_CLIENT6),
        ] {
            ip(&[
                "-n",
                &sw,
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "name",
                OUTSIDE_IFACE,
                "netns",
                ns,
            ])?;
            ip(&[
                "-n",
                &sw,
                "link",
                "set",
                port,
                "master",
                OUTSIDE_BRIDGE,
                "up",
            ])?;
            ip(&["-n", ns, "addr", "add", addr, "dev", OUTSIDE_IFACE])?;
            ip(&["-n", ns, "link", "set", OUTSIDE_IFACE, "up"])?;
            // nodad: usable at once (add_host's reason).
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                addr6,
                "dev",
                OUTSIDE_IFACE,
                "nodad",
            ])?;
            exec_in(ns, &["ethtool", "-K", OUTSIDE_IFACE, "tx", "off"])?;
        }
        // Redirected frames leave the balancer through eth1: its peer needs XDP.
        self.attach_xdp_pass("v-lbo")?;
        ip(&["-n", &client, "link", "set", HOST_IFACE, "down"])?;
        default_route(&client, TWO_ARMED_GATEWAY)?;
        default_route(&client, TWO_ARMED_GATEWAY6)?;
        self.route_real_servers_through_lb()?;
        self.service_addr = TWO_ARMED_GATEWAY.parse()?;
        self.agent_ifaces = vec![OUTSIDE_IFACE.to_string(), HOST_IFACE.to_string()];
        Ok(())
    }

    /// Undoes make_nat_one_armed: back to the seed's DR network.
    pub fn undo_nat_one_armed(&mut self) -> Result<()> {
        let (client, lb) = (self.ns(Host::Client), self.ns(Host::Lb));
        ip(&["-n", &lb, "addr", "del", NAT_OUTSIDE_LB, "dev", HOST_IFACE])?;
        // IPv4 only: the client keeps its IPv6 address.
        ip(&["-n", &client, "-4", "addr", "flush", "dev", HOST_IFACE])?;
        ip(&[
            "-n",
            &client,
            "addr",
            "add",
            &format!("{CLIENT_IP}/{SUBNET_PREFIX}"),
            "dev",
            HOST_IFACE,
        ])?;
        for rs in [Host::Rs1, Host::Rs2] {
            ip(&["-n", &self.ns(rs), "route", "del", "default"])?;
            ip(&["-n", &self.ns(rs), "-6", "route", "del", "default"])?;
        }
        self.service_addr = VIP;
        Ok(())
    }
}
