//! The `play` screen: setup, per-stage speed, ring levels, time to first audio.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Gauge, Paragraph, Row, Table};
use ratatui::Frame;

use crate::engine::RunInfo;
use crate::pipeline::{Fill, Snapshot, StageRate};

pub fn render(frame: &mut Frame, info: &RunInfo, snap: &Snapshot) {
    let [header, stages, rings, footer] = Layout::vertical([
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Length(5),
        Constraint::Min(1),
    ])
    .areas(frame.area());
    frame.render_widget(setup(info), header);
    frame.render_widget(stage_table(snap), stages);
    render_rings(frame, snap, rings);
    frame.render_widget(status(snap), footer);
}

fn setup(info: &RunInfo) -> Paragraph<'static> {
    let lines = vec![
        Line::from(format!(
            "model {} · LM on {} ({}) · codec on {}",
            info.model, info.device, info.dtype, info.codec_device
        )),
        Line::from(format!("sampling: {}", info.sampling)),
        Line::from(format!("codec: {}", info.codec)),
    ];
    Paragraph::new(lines).block(titled("heartstream"))
}

fn stage_table(snap: &Snapshot) -> Table<'static> {
    let row = |name: &str, rate: &StageRate| {
        let rtf = rate.rtf;
        Row::new(vec![
            name.to_string(),
            format!("{:.1} s", rate.audio_seconds),
            rtf.map_or("-".into(), |r| format!("{r:.3}")),
            rtf.map_or("-".into(), |r| format!("{:.1}×", 1.0 / r.max(1e-9))),
        ])
    };
    let rows = vec![
        row("LM (codes)", &snap.lm),
        row("flow matching (latents)", &snap.flow),
        row("decoder (PCM)", &snap.decode),
    ];
    let widths = [
        Constraint::Length(26),
        Constraint::Length(10),
        Constraint::Length(17),
        Constraint::Length(12),
    ];
    Table::new(rows, widths)
        .header(
            Row::new(vec!["stage", "audio", "real-time factor", "speed"])
                .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .block(titled("stages"))
}

fn render_rings(frame: &mut Frame, snap: &Snapshot, area: Rect) {
    let block = titled("buffers");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let rows = Layout::vertical([Constraint::Length(1); 3]).split(inner);
    let bars = [
        ("codes ring", snap.codes_fill, "frames"),
        ("latents ring", snap.latents_fill, "windows"),
        ("playback buffer", snap.playback_fill, "samples"),
    ];
    for ((name, fill, unit), row) in bars.into_iter().zip(rows.iter()) {
        frame.render_widget(bar(name, fill, unit), *row);
    }
}

fn bar(name: &str, fill: Option<Fill>, unit: &str) -> Gauge<'static> {
    let (ratio, label) = match fill {
        Some(f) => (
            f.ratio(),
            format!("{name}: {}/{} {unit}", f.occupied, f.capacity),
        ),
        None => (0.0, format!("{name}: none")),
    };
    Gauge::default()
        .gauge_style(Style::default().fg(Color::Cyan))
        .ratio(ratio)
        .label(label)
}

fn status(snap: &Snapshot) -> Paragraph<'static> {
    let ttfa = snap.ttfa.map_or("waiting…".into(), |t| {
        format!("{:.0} ms", t.as_secs_f64() * 1e3)
    });
    let overall = snap.overall_rtf().map_or("-".into(), |r| format!("{r:.3}"));
    let played = snap.playback.map_or("-".into(), |p| {
        format!("{:.1} s · underruns {}", p.played_seconds, p.underruns)
    });
    let lines = vec![
        Line::from(vec![
            Span::raw("time to first audio "),
            Span::styled(ttfa, Style::default().add_modifier(Modifier::BOLD)),
            Span::raw(format!(" · overall real-time factor {overall}")),
        ]),
        Line::from(format!(
            "audio generated {:.1} s · played {played} · {} frames in {:.1} s",
            snap.decode.audio_seconds,
            snap.frames,
            snap.elapsed.as_secs_f64()
        )),
        Line::from(Span::styled(
            "q or Ctrl-C: quit",
            Style::default().fg(Color::DarkGray),
        )),
    ];
    Paragraph::new(lines).block(Block::default().borders(Borders::TOP))
}

fn titled(title: &str) -> Block<'static> {
    Block::default()
        .borders(Borders::ALL)
        .title(format!(" {title} "))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    use super::*;
    use crate::audio::playback::PlaybackStats;

    fn info() -> RunInfo {
        RunInfo {
            model: "synthetic tiny (random weights)".into(),
            device: "cpu".into(),
            codec_device: "cpu".into(),
            dtype: "f32".into(),
            sampling: "temperature 1 · top-k 50 · cfg 1.5 · seed 7".into(),
            codec: "10 flow steps".into(),
            seed: 7,
        }
    }

    fn screen_text(snap: &Snapshot) -> String {
        let mut terminal = Terminal::new(TestBackend::new(100, 24)).unwrap();
        terminal.draw(|f| render(f, &info(), snap)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        (0..buffer.area.height)
            .map(|y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_screen_shows_speeds_levels_and_first_audio() {
        let snap = Snapshot {
            elapsed: Duration::from_secs(4),
            frames: 100,
            lm: StageRate {
                audio_seconds: 8.0,
                rtf: Some(0.25),
            },
            decode: StageRate {
                audio_seconds: 7.5,
                rtf: Some(0.05),
            },
            ttfa: Some(Duration::from_millis(280)),
            codes_fill: Some(Fill {
                occupied: 3,
                capacity: 744,
            }),
            playback_fill: Some(Fill {
                occupied: 48_000,
                capacity: 96_000,
            }),
            playback: Some(PlaybackStats {
                played_seconds: 3.5,
                underruns: 2,
            }),
            ..Snapshot::default()
        };
        let text = screen_text(&snap);
        for expected in [
            "synthetic tiny",
            "LM on cpu (f32)",
            "top-k 50",
            "LM (codes)",
            "0.250",
            "4.0×",
            "codes ring: 3/744 frames",
            "playback buffer: 48000/96000 samples",
            "latents ring: none",
            "time to first audio 280 ms",
            "overall real-time factor 0.533",
            "played 3.5 s · underruns 2",
            "q or Ctrl-C: quit",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        let waiting = screen_text(&Snapshot::default());
        assert!(waiting.contains("time to first audio waiting"), "{waiting}");
    }
}
