//! The VRRP state machine (RFC 3768 / 5798 section 6, with keepalived's
//! choices): a pure function of (state, event, now) -> (state, actions).
//! Time is injected, so takeover times are tested exactly.

use std::{net::IpAddr, time::Duration, time::Instant};

/// The address owner's priority: always master.
pub const PRIORITY_OWNER: u8 = 255;
/// Sent by a master that stops: backups take over after Skew_Time only.
pub const PRIORITY_STOP: u8 = 0;
/// Skew_Time's numerator base (RFC: (256 - Priority) / 256).
const SKEW_BASE: u32 = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Init,
    Backup,
    Master,
    Fault,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Init => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Params {
    pub version: u8,
    pub priority: u8,
    pub advert_int: Duration,
    /// false with nopreempt.
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// Configured `state = "MASTER"`: take over at once on start.
    pub start_as_master: bool,
    /// Our address on the link (IPv6: the link-local one, the adverts'
    /// source): breaks ties between equal priorities.
    pub local_addr: IpAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Start,
    /// A valid advertisement of our vrid.
    Advert {
        priority: u8,
        src: IpAddr,
        advert_int: Duration,
    },
    /// The deadline passed.
    Timeout,
    Shutdown,
    LinkDown,
    LinkUp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    SendAdvert {
        priority: u8,
    },
    /// Add the VIPs, send gratuitous ARPs, run notify_master.
    BecomeMaster,
    /// Remove the VIPs (if held), run notify_backup.
    BecomeBackup,
    /// Remove the VIPs (if held), run notify_fault.
    BecomeFault,
}

#[derive(Debug, Clone)]
pub struct Machine {
    p: Params,
    state: State,
    deadline: Option<Instant>,
    /// VRRPv3 learns the master's interval; v2 uses its own.
    master_adver_int: Duration,
    /// keepalived's preempt_time: when a pending preempt_delay ends.
    preempt_time: Option<Instant>,
    /// Preemption held back from outside (connection sync's catch-up).
    preemption_held: bool,
}

impl Machine {
    pub fn new(p: Params) -> Self {
        let master_adver_int = p.advert_int;
        Self {
            p,
            state: State::Init,
            deadline: None,
            master_adver_int,
            preempt_time: None,
            preemption_held: false,
        }
    }

    /// While held, a lower-priority master's adverts keep us BACKUP as a
    /// running preempt_delay does; released, the next of them is ignored
    /// and the down timer runs out.
    pub fn hold_preemption(&mut self, held: bool) {
        self.preemption_held = held;
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// When `Event::Timeout` is due.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub fn priority(&self) -> u8 {
        self.p.priority
    }

    /// Skew_Time: lower priorities wait longer.
    pub fn skew(&self) -> Duration {
        let weight = SKEW_BASE - u32::from(self.p.priority);
        match self.p.version {
            2 => Duration::from_secs(1) * weight / SKEW_BASE,
            _ => self.master_adver_int * weight / SKEW_BASE,
        }
    }

    /// Master_Down_Interval = 3 x Master_Adver_Interval + Skew_Time.
    pub fn master_down_interval(&self) -> Duration {
        self.master_adver_int * 3 + self.skew()
    }

    fn become_master(&mut self, now: Instant) -> Vec<Action> {
        self.state = State::Master;
        self.deadline = Some(now + self.p.advert_int);
        vec![
            Action::SendAdvert {
                priority: self.p.priority,
            },
            Action::BecomeMaster,
        ]
    }

    fn become_backup(&mut self, now: Instant) -> Vec<Action> {
        self.state = State::Backup;
        self.deadline = Some(now + self.master_down_interval());
        vec![Action::BecomeBackup]
    }

    /// keepalived: while a preempt_delay runs, lower adverts still hold us back.
    fn preempt_delay_pending(&self, now: Instant) -> bool {
        !self.p.preempt_delay.is_zero() && self.preempt_time.is_none_or(|t| t > now)
    }

    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        match (self.state, event) {
            (State::Init, Event::Start) => {
                if self.p.start_as_master || self.p.priority == PRIORITY_OWNER {
                    self.become_master(now)
                } else {
                    self.become_backup(now)
                }
            }
            (State::Master, Event::Timeout) if self.deadline.is_some_and(|d| d <= now) => {
                self.deadline = Some(now + self.p.advert_int);
                vec![Action::SendAdvert {
                    priority: self.p.priority,
                }]
            }
            (State::Backup, Event::Timeout) if self.deadline.is_some_and(|d| d <= now) => {
                self.become_master(now)
            }
            (
                State::Backup,
                Event::Advert {
                    priority,
                    advert_int,
                    ..
                },
            ) => {
                self.backup_rx(priority, advert_int, now);
                Vec::new()
            }
            (
                State::Master,
                Event::Advert {
                    priority,
                    src,
                    advert_int,
                },
            ) => self.master_rx(priority, src, advert_int, now),
            (State::Master, Event::Shutdown) => {
                self.state = State::Init;
                self.deadline = None;
                vec![
                    Action::SendAdvert {
                        priority: PRIORITY_STOP,
                    },
                    Action::BecomeBackup,
                ]
            }
            (_, Event::Shutdown) => {
                self.state = State::Init;
                self.deadline = None;
                Vec::new()
            }
            (State::Master | State::Backup, Event::LinkDown) => {
                self.state = State::Fault;
                self.deadline = None;
                vec![Action::BecomeFault]
            }
            (State::Fault, Event::LinkUp) => self.become_backup(now),
            _ => Vec::new(),
        }
    }

    fn backup_rx(&mut self, priority: u8, advert_int: Duration, now: Instant) {
        if priority == PRIORITY_STOP {
            // The master is leaving: take over after Skew_Time only.
            self.deadline = Some(now + self.skew());
        } else if !self.p.preempt
            || priority >= self.p.priority
            || self.preempt_delay_pending(now)
            || self.preemption_held
        {
            if self.p.version == 3 {
                self.master_adver_int = advert_int;
            }
            self.deadline = Some(now + self.master_down_interval());
            if !self.p.preempt_delay.is_zero() {
                if priority >= self.p.priority {
                    self.preempt_time = None;
                } else if self.preempt_time.is_none() {
                    self.preempt_time = Some(now + self.p.preempt_delay);
                }
            }
        }
        // else: a lower-priority master and we may preempt: ignore it; the
        // down timer runs out and we take over.
    }

    fn master_rx(
        &mut self,
        priority: u8,
        src: IpAddr,
        advert_int: Duration,
        now: Instant,
    ) -> Vec<Action> {
        let ours = self.p.priority;
        if priority == PRIORITY_STOP {
            // Another master is leaving: assert ourselves at once.
            return vec![Action::SendAdvert { priority: ours }];
        }
        if priority > ours || (priority == ours && src > self.p.local_addr) {
            if self.p.version == 3 {
                self.master_adver_int = advert_int;
            }
            return self.become_backup(now);
        }
        // A lower priority (or a lower address): force a new election.
        vec![Action::SendAdvert { priority: ours }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::Ipv4Addr;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 16, 122, 188));
    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 16, 122, 189));
    const SEC: Duration = Duration::from_secs(1);

    fn params(priority: u8) -> Params {
        Params {
            version: 2,
            priority,
            advert_int: SEC,
            preempt: true,
            preempt_delay: Duration::ZERO,
            start_as_master: false,
            local_addr: LOCAL,
        }
    }

    fn advert(priority: u8) -> Event {
        Event::Advert {
            priority,
            src: PEER,
            advert_int: SEC,
        }
    }

    /// Runs timeouts until `until`, returning when the machine became master.
    fn run_until(m: &mut Machine, start: Instant, until: Duration) -> Option<Duration> {
        while let Some(d) = m.deadline() {
            if d > start + until {
                return None;
            }
            let actions = m.handle(Event::Timeout, d);
            if actions.contains(&Action::BecomeMaster) {
                return Some(d - start);
            }
        }
        None
    }

    #[test]
    fn takeover_after_master_down_interval() {
        // The seed's backup: priority 90, advert_int 1 -> 3 s + (256-90)/256 s.
        let t0 = Instant::now();
        let mut m = Machine::new(params(90));
        assert_eq!(m.handle(Event::Start, t0), vec![Action::BecomeBackup]);
        let expected = SEC * 3 + SEC * 166 / 256;
        assert_eq!(m.master_down_interval(), expected);
        // Adverts from the master keep it backup...
        for i in 1..=5 {
            assert!(m.handle(advert(100), t0 + SEC * i).is_empty());
            assert_eq!(m.state(), State::Backup);
        }
        // ...then silence: master exactly Master_Down_Interval after the last one.
        let last = t0 + SEC * 5;
        assert_eq!(run_until(&mut m, last, SEC * 10), Some(expected));
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn master_sends_an_advert_every_interval() {
        let t0 = Instant::now();
        let mut m = Machine::new(Params {
            start_as_master: true,
            ..params(100)
        });
        assert_eq!(
            m.handle(Event::Start, t0),
            vec![Action::SendAdvert { priority: 100 }, Action::BecomeMaster]
        );
        for i in 1..=3 {
            let due = m.deadline().unwrap();
            assert_eq!(due, t0 + SEC * i);
            assert_eq!(
                m.handle(Event::Timeout, due),
                vec![Action::SendAdvert { priority: 100 }]
            );
        }
    }

    #[test]
    fn priority_zero_means_takeover_after_skew_only() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(90));
        m.handle(Event::Start, t0);
        m.handle(advert(0), t0 + SEC);
        assert_eq!(run_until(&mut m, t0 + SEC, SEC * 10), Some(SEC * 166 / 256));
    }

    #[test]
    fn higher_priority_backup_preempts_a_lower_master() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(100));
        m.handle(Event::Start, t0);
        // Lower-priority adverts are ignored: the timer runs out.
        for i in 1..=10 {
            assert!(m.handle(advert(90), t0 + SEC * i / 4).is_empty());
        }
        assert_eq!(
            run_until(&mut m, t0, SEC * 10),
            Some(m.master_down_interval())
        );
        // As master, a lower advert triggers our own advert.
        let now = t0 + SEC * 5;
        assert_eq!(
            m.handle(advert(90), now),
            vec![Action::SendAdvert { priority: 100 }]
        );
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn nopreempt_never_takes_over_from_a_live_master() {
        let t0 = Instant::now();
        let mut m = Machine::new(Params {
            preempt: false,
            ..params(100)
        });
        m.handle(Event::Start, t0);
        for i in 1..=20 {
            m.handle(advert(90), t0 + SEC * i);
        }
        assert_eq!(m.state(), State::Backup);
        assert_eq!(m.deadline(), Some(t0 + SEC * 20 + m.master_down_interval()));
    }

    #[test]
    fn a_held_preemption_waits_for_its_release() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(100));
        m.hold_preemption(true);
        m.handle(Event::Start, t0);
        // Held: a lower master's adverts keep us BACKUP however long.
        for i in 1..=30 {
            m.handle(advert(90), t0 + SEC * i);
            assert_eq!(m.deadline(), Some(t0 + SEC * i + m.master_down_interval()));
        }
        assert_eq!(m.state(), State::Backup);
        // Released: its adverts are ignored and the down timer runs out.
        m.hold_preemption(false);
        let released = t0 + SEC * 31;
        assert!(m.handle(advert(90), released).is_empty());
        assert_eq!(m.deadline(), Some(t0 + SEC * 30 + m.master_down_interval()));
        let d = m.deadline().unwrap();
        assert!(m.handle(Event::Timeout, d).contains(&Action::BecomeMaster));
    }

    #[test]
    fn preempt_delay_holds_preemption_back() {
        let t0 = Instant::now();
        let delay = SEC * 5;
        let mut m = Machine::new(Params {
            preempt_delay: delay,
            ..params(100)
        });
        m.handle(Event::Start, t0);
        // Adverts every second from a lower master: for 5 s they still count.
        let mut became_master_at = None;
        for i in 1..=20 {
            let now = t0 + SEC * i;
            if m.deadline().is_some_and(|d| d <= now) {
                let d = m.deadline().unwrap();
                if m.handle(Event::Timeout, d).contains(&Action::BecomeMaster) {
                    became_master_at = Some(d - t0);
                    break;
                }
            }
            m.handle(advert(90), now);
        }
        // The first lower advert (1 s) starts the 5 s delay; adverts before
        // 6 s still reset the timer (the last at 5 s); from 6 s on they are
        // ignored and it runs out: 5 s + Master_Down_Interval.
        assert_eq!(became_master_at, Some(SEC * 5 + m.master_down_interval()));
    }

    #[test]
    fn equal_priority_tie_is_broken_by_the_higher_address() {
        let t0 = Instant::now();
        let mut m = Machine::new(Params {
            start_as_master: true,
            ..params(100)
        });
        m.handle(Event::Start, t0);
        let lower = Event::Advert {
            priority: 100,
            src: Ipv4Addr::new(172, 16, 122, 1).into(),
            advert_int: SEC,
        };
        assert_eq!(
            m.handle(lower, t0),
            vec![Action::SendAdvert { priority: 100 }]
        );
        assert_eq!(m.state(), State::Master);
        // PEER (.189) > LOCAL (.188): we yield.
        assert_eq!(m.handle(advert(100), t0), vec![Action::BecomeBackup]);
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn higher_priority_master_makes_us_backup() {
        let t0 = Instant::now();
        let mut m = Machine::new(Params {
            start_as_master: true,
            ..params(90)
        });
        m.handle(Event::Start, t0);
        assert_eq!(m.handle(advert(100), t0 + SEC), vec![Action::BecomeBackup]);
    }

    #[test]
    fn shutdown_of_a_master_sends_priority_zero() {
        let t0 = Instant::now();
        let mut m = Machine::new(Params {
            start_as_master: true,
            ..params(100)
        });
        m.handle(Event::Start, t0);
        assert_eq!(
            m.handle(Event::Shutdown, t0 + SEC),
            vec![Action::SendAdvert { priority: 0 }, Action::BecomeBackup]
        );
        assert_eq!(m.deadline(), None);
    }

    #[test]
    fn address_owner_is_master_at_once() {
        let mut m = Machine::new(params(PRIORITY_OWNER));
        assert!(
            m.handle(Event::Start, Instant::now())
                .contains(&Action::BecomeMaster)
        );
    }

    #[test]
    fn link_down_is_fault_and_link_up_is_backup() {
        let t0 = Instant::now();
        let mut m = Machine::new(Params {
            start_as_master: true,
            ..params(100)
        });
        m.handle(Event::Start, t0);
        assert_eq!(m.handle(Event::LinkDown, t0), vec![Action::BecomeFault]);
        assert_eq!(m.state(), State::Fault);
        assert!(m.handle(Event::Timeout, t0 + SEC * 10).is_empty());
        assert_eq!(
            m.handle(Event::LinkUp, t0 + SEC * 11),
            vec![Action::BecomeBackup]
        );
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn v3_backup_learns_the_masters_interval() {
        let t0 = Instant::now();
        let mut m = Machine::new(Params {
            version: 3,
            ..params(90)
        });
        m.handle(Event::Start, t0);
        let fast = Duration::from_millis(100);
        m.handle(
            Event::Advert {
                priority: 100,
                src: PEER,
                advert_int: fast,
            },
            t0,
        );
        assert_eq!(m.master_down_interval(), fast * 3 + fast * 166 / 256);
    }
}
