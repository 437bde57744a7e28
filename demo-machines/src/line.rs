//! The simulated filling line, sans-IO: a state machine whose process values change with the time passed in.
//!
//! ```text
//!            Start             Stop
//!   Idle ───────────▶ Running ──────▶ Stopped ──Start──▶ Running
//!    ▲                   │                │
//!    │                   │ over-temperature│
//!    │      Reset        ▼                 │ Reset
//!    └────────────────  Fault  ◀───────────┘ (Reset also from Stopped)
//! ```
//! - **Start**: Idle or Stopped → Running; already Running: nothing to do (Good); Fault → `BadInvalidState`
//!   (Reset first).
//! - **Stop**: Running → Stopped; Idle or Stopped: nothing to do (Good); Fault → `BadInvalidState`.
//! - **Reset**: Stopped, Fault or Idle → Idle with the part counters at zero; Running → `BadInvalidState` (Stop
//!   first).
//! - **Speed setpoint** (bottles per minute): any state, `0 ..= max_speed`, otherwise `BadOutOfRange`.
//!
//! While running, the line fills `speed / 60` bottles per second; every `bad_every`-th one is bad. Temperature and
//! pressure follow first-order lags towards targets that grow with the speed (and fall back to ambient when the
//! line does not run), plus a small deterministic ripple so that they keep changing. A line that gets hotter than
//! `fault_temperature` while running goes to Fault and stops filling. Nothing here reads a clock: the caller passes
//! the time that went by to [`FillingLine::advance`].

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// Where the line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum LineState {
    /// Ready, counters at zero.
    Idle,
    /// Filling.
    Running,
    /// Stopped by an operator; counters kept.
    Stopped,
    /// Stopped by the line itself (over-temperature); needs Reset.
    Fault,
}

impl LineState {
    /// The name clients read in the State variable.
    pub fn as_str(self) -> &'static str {
        match self {
            LineState::Idle => "Idle",
            LineState::Running => "Running",
            LineState::Stopped => "Stopped",
            LineState::Fault => "Fault",
        }
    }
}

impl fmt::Display for LineState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the line refused a command. [`Refusal::status_code`] is what an OPC UA client gets.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// The command does not fit the state.
    #[error("{command} is not possible while the line is {state}{hint}")]
    InvalidState {
        /// The command.
        command: &'static str,
        /// The state.
        state: LineState,
        /// What to do instead (starts with "; " when present).
        hint: &'static str,
    },
    /// A setpoint outside its range.
    #[error("speed setpoint {value} is outside 0 ..= {max} bottles/min")]
    OutOfRange {
        /// The value asked for.
        value: f64,
        /// The largest allowed value.
        max: f64,
    },
}

impl Refusal {
    /// The OPC UA status code for this refusal.
    pub fn status_code(&self) -> opcua_types::StatusCode {
        match self {
            Refusal::InvalidState { .. } => opcua_types::StatusCode::BadInvalidState,
            Refusal::OutOfRange { .. } => opcua_types::StatusCode::BadOutOfRange,
        }
    }
}

/// The line's physics and limits.
#[derive(Clone, Debug, PartialEq)]
pub struct LineParams {
    /// Largest speed setpoint, bottles per minute.
    pub max_speed: f64,
    /// Speed setpoint after power-up.
    pub initial_speed: f64,
    /// Temperature of a line that does not run, °C.
    pub ambient_temperature: f64,
    /// Temperature rise per bottle/min when running, °C.
    pub heating_per_speed: f64,
    /// Time constant of the temperature, seconds.
    pub temperature_tau: f64,
    /// Above this temperature a running line faults, °C.
    pub fault_temperature: f64,
    /// Pressure of a line that does not run, bar.
    pub idle_pressure: f64,
    /// Pressure rise at full speed, bar.
    pub full_speed_pressure_rise: f64,
    /// Time constant of the pressure, seconds.
    pub pressure_tau: f64,
    /// Every this many bottles one is bad (0: none).
    pub bad_every: u64,
}

impl Default for LineParams {
    fn default() -> Self {
        LineParams {
            max_speed: 600.0,
            initial_speed: 120.0,
            ambient_temperature: 22.0,
            heating_per_speed: 0.12,
            temperature_tau: 6.0,
            fault_temperature: 90.0,
            idle_pressure: 1.0,
            full_speed_pressure_rise: 3.0,
            pressure_tau: 1.5,
            bad_every: 25,
        }
    }
}

/// What the line shows at one moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Snapshot {
    /// The state.
    pub state: LineState,
    /// The speed setpoint, bottles per minute.
    pub speed_setpoint: f64,
    /// Product temperature, °C (rounded to 0.01).
    pub temperature: f64,
    /// Filler pressure, bar (rounded to 0.001).
    pub pressure: f64,
    /// Good bottles since the last Reset.
    pub good_parts: u64,
    /// Bad bottles since the last Reset.
    pub bad_parts: u64,
}

/// The filling line.
#[derive(Clone, Debug)]
pub struct FillingLine {
    params: LineParams,
    state: LineState,
    speed_setpoint: f64,
    temperature: f64,
    pressure: f64,
    parts: u64,
    bad_parts: u64,
    part_fraction: f64,
    elapsed: f64,
}

impl Default for FillingLine {
    fn default() -> Self {
        FillingLine::new(LineParams::default())
    }
}

impl FillingLine {
    /// A line at ambient conditions, Idle.
    pub fn new(params: LineParams) -> Self {
        FillingLine {
            state: LineState::Idle,
            speed_setpoint: params.initial_speed.clamp(0.0, params.max_speed),
            temperature: params.ambient_temperature,
            pressure: params.idle_pressure,
            parts: 0,
            bad_parts: 0,
            part_fraction: 0.0,
            elapsed: 0.0,
            params,
        }
    }

    /// The parameters.
    pub fn params(&self) -> &LineParams {
        &self.params
    }

    /// The state.
    pub fn state(&self) -> LineState {
        self.state
    }

    /// Start filling.
    pub fn start(&mut self) -> Result<(), Refusal> {
        match self.state {
            LineState::Idle | LineState::Stopped | LineState::Running => {
                self.state = LineState::Running;
                Ok(())
            }
            LineState::Fault => Err(self.refuse("Start", "; call Reset first")),
        }
    }

    /// Stop filling (counters are kept).
    pub fn stop(&mut self) -> Result<(), Refusal> {
        match self.state {
            LineState::Running => {
                self.state = LineState::Stopped;
                Ok(())
            }
            LineState::Idle | LineState::Stopped => Ok(()),
            LineState::Fault => Err(self.refuse("Stop", "; the line already stopped itself, call Reset")),
        }
    }

    /// Back to Idle: clears a fault and the counters.
    pub fn reset(&mut self) -> Result<(), Refusal> {
        match self.state {
            LineState::Running => Err(self.refuse("Reset", "; call Stop first")),
            LineState::Idle | LineState::Stopped | LineState::Fault => {
                self.state = LineState::Idle;
                self.parts = 0;
                self.bad_parts = 0;
                self.part_fraction = 0.0;
                Ok(())
            }
        }
    }

    /// A new speed setpoint, bottles per minute.
    pub fn set_speed(&mut self, value: f64) -> Result<(), Refusal> {
        // NaN fails both comparisons, so it is refused too.
        if !(value >= 0.0 && value <= self.params.max_speed) {
            return Err(Refusal::OutOfRange { value, max: self.params.max_speed });
        }
        self.speed_setpoint = value;
        Ok(())
    }

    fn refuse(&self, command: &'static str, hint: &'static str) -> Refusal {
        Refusal::InvalidState { command, state: self.state, hint }
    }

    /// Lets `dt` pass: temperatures and pressure move, bottles are filled, an overheated line faults.
    pub fn advance(&mut self, dt: Duration) {
        let dt = dt.as_secs_f64();
        if dt <= 0.0 || !dt.is_finite() {
            return;
        }
        let p = &self.params;
        let running = self.state == LineState::Running;
        let load = if running { self.speed_setpoint } else { 0.0 };
        let temperature_target = p.ambient_temperature + p.heating_per_speed * load;
        let pressure_target = p.idle_pressure + p.full_speed_pressure_rise * load / p.max_speed.max(f64::EPSILON);
        // Exact solution of the first-order lag over dt: stable for any step size.
        self.temperature = lag(self.temperature, temperature_target, dt, p.temperature_tau);
        self.pressure = lag(self.pressure, pressure_target, dt, p.pressure_tau);
        if running {
            self.part_fraction += self.speed_setpoint / 60.0 * dt;
            let whole = self.part_fraction.floor();
            self.part_fraction -= whole;
            for _ in 0..whole as u64 {
                self.parts += 1;
                if p.bad_every > 0 && self.parts.is_multiple_of(p.bad_every) {
                    self.bad_parts += 1;
                }
            }
            if self.temperature > p.fault_temperature {
                self.state = LineState::Fault;
            }
        }
        self.elapsed += dt;
    }

    /// The values clients see now.
    pub fn snapshot(&self) -> Snapshot {
        let t = self.elapsed;
        // Sensor ripple: deterministic, small, and never quite periodic (two incommensurate frequencies).
        let temperature = self.temperature + 0.15 * (t * 0.9).sin() + 0.05 * (t * 2.3).sin();
        let pressure = self.pressure + 0.01 * (t * 1.7).sin();
        Snapshot {
            state: self.state,
            speed_setpoint: self.speed_setpoint,
            temperature: (temperature * 100.0).round() / 100.0,
            pressure: (pressure * 1000.0).round() / 1000.0,
            good_parts: self.parts - self.bad_parts,
            bad_parts: self.bad_parts,
        }
    }
}

fn lag(value: f64, target: f64, dt: f64, tau: f64) -> f64 {
    if tau <= 0.0 {
        return target;
    }
    target + (value - target) * (-dt / tau).exp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opcua_types::StatusCode;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn a_new_line_is_idle_at_ambient() {
        let line = FillingLine::default();
        let s = line.snapshot();
        assert_eq!(s.state, LineState::Idle);
        assert_eq!((s.good_parts, s.bad_parts), (0, 0));
        assert!((s.temperature - 22.0).abs() < 0.3, "{s:?}");
        assert!((s.pressure - 1.0).abs() < 0.02, "{s:?}");
    }

    #[test]
    fn running_fills_bottles_and_heats_up() {
        let mut line = FillingLine::default();
        line.set_speed(120.0).unwrap();
        line.start().unwrap();
        for _ in 0..100 {
            line.advance(secs(0.1));
        }
        // 10 s at 2 bottles/s: 20 bottles, none of them the 25th.
        let s = line.snapshot();
        assert_eq!(s.good_parts + s.bad_parts, 20);
        assert_eq!(s.bad_parts, 0);
        assert!(s.temperature > 30.0 && s.temperature < 22.0 + 0.12 * 120.0 + 0.3, "{s:?}");
        assert!(s.pressure > 1.5, "{s:?}");
        for _ in 0..100 {
            line.advance(secs(0.1));
        }
        let s = line.snapshot();
        assert_eq!((s.good_parts, s.bad_parts), (39, 1), "every 25th bottle is bad");
    }

    #[test]
    fn step_size_does_not_change_the_outcome() {
        let mut fine = FillingLine::default();
        let mut coarse = FillingLine::default();
        fine.start().unwrap();
        coarse.start().unwrap();
        for _ in 0..300 {
            fine.advance(secs(0.1));
        }
        coarse.advance(secs(30.0));
        let (a, b) = (fine.snapshot(), coarse.snapshot());
        assert_eq!(a.good_parts + a.bad_parts, b.good_parts + b.bad_parts);
        assert!((a.temperature - b.temperature).abs() < 0.5, "{a:?} {b:?}");
    }

    #[test]
    fn values_keep_changing_at_steady_state() {
        let mut line = FillingLine::default();
        line.start().unwrap();
        line.advance(secs(600.0));
        let before = line.snapshot();
        line.advance(secs(0.5));
        let after = line.snapshot();
        assert_ne!(before.temperature, after.temperature);
        assert_ne!(before.pressure, after.pressure);
    }

    #[test]
    fn stop_keeps_counters_and_cools_down() {
        let mut line = FillingLine::default();
        line.start().unwrap();
        line.advance(secs(30.0));
        line.stop().unwrap();
        let stopped = line.snapshot();
        assert_eq!(stopped.state, LineState::Stopped);
        line.advance(secs(60.0));
        let later = line.snapshot();
        assert_eq!(later.good_parts, stopped.good_parts, "no bottles while stopped");
        assert!(later.temperature < stopped.temperature - 5.0, "{later:?}");
        // Start again continues counting.
        line.start().unwrap();
        line.advance(secs(1.0));
        assert!(line.snapshot().good_parts > stopped.good_parts);
    }

    #[test]
    fn overheating_faults_and_start_is_refused_until_reset() {
        let mut line = FillingLine::default();
        line.set_speed(600.0).unwrap(); // target 22 + 72 = 94 °C > 90 °C
        line.start().unwrap();
        line.advance(secs(60.0));
        assert_eq!(line.state(), LineState::Fault);
        let parts = line.snapshot().good_parts;
        line.advance(secs(10.0));
        assert_eq!(line.snapshot().good_parts, parts, "a faulted line does not fill");

        let err = line.start().unwrap_err();
        assert_eq!(err.status_code(), StatusCode::BadInvalidState);
        assert!(err.to_string().contains("Reset"), "{err}");
        assert_eq!(line.stop().unwrap_err().status_code(), StatusCode::BadInvalidState);
        line.reset().unwrap();
        let s = line.snapshot();
        assert_eq!((s.state, s.good_parts, s.bad_parts), (LineState::Idle, 0, 0));
        line.set_speed(100.0).unwrap();
        line.start().unwrap();
        assert_eq!(line.state(), LineState::Running);
    }

    #[test]
    fn reset_while_running_is_refused() {
        let mut line = FillingLine::default();
        line.start().unwrap();
        let err = line.reset().unwrap_err();
        assert_eq!(
            err,
            Refusal::InvalidState { command: "Reset", state: LineState::Running, hint: "; call Stop first" }
        );
        assert_eq!(line.state(), LineState::Running);
    }

    #[test]
    fn idempotent_commands_are_good() {
        let mut line = FillingLine::default();
        line.stop().unwrap();
        assert_eq!(line.state(), LineState::Idle);
        line.start().unwrap();
        line.start().unwrap();
        assert_eq!(line.state(), LineState::Running);
        line.stop().unwrap();
        line.stop().unwrap();
        assert_eq!(line.state(), LineState::Stopped);
    }

    #[test]
    fn setpoints_out_of_range_are_refused() {
        let mut line = FillingLine::default();
        for bad in [-1.0, 600.5, f64::NAN, f64::INFINITY] {
            let err = line.set_speed(bad).unwrap_err();
            assert_eq!(err.status_code(), StatusCode::BadOutOfRange, "{bad}");
        }
        assert_eq!(line.snapshot().speed_setpoint, 120.0, "unchanged");
        line.set_speed(0.0).unwrap();
        line.set_speed(600.0).unwrap();
        assert_eq!(line.snapshot().speed_setpoint, 600.0);
    }

    #[test]
    fn odd_time_steps_are_ignored() {
        let mut line = FillingLine::default();
        line.start().unwrap();
        let before = line.snapshot();
        line.advance(Duration::ZERO);
        assert_eq!(line.snapshot(), before);
    }
}
