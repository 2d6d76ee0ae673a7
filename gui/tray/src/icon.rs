//! The tray icons, drawn in code: a coloured dot per [`Indicator`] (spec §3.3), with a few
//! animation frames for "executing" (pulsing) and "reconnecting" (spinning).

use protocol::control::Indicator;

/// Icon side in pixels (both platforms scale it).
pub const SIZE: usize = 32;

/// How many frames an indicator animates through (1 = a still icon).
pub fn frames(indicator: Indicator) -> usize {
    match indicator {
        Indicator::Executing => 4,
        Indicator::Reconnecting => 8,
        _ => 1,
    }
}

/// One frame as straight (not premultiplied) RGBA, row by row from the top, `SIZE * SIZE * 4`
/// bytes.
pub fn rgba(indicator: Indicator, frame: usize) -> Vec<u8> {
    let rgb = indicator.rgb();
    let (r, g, b) = ((rgb >> 16) as u8, (rgb >> 8) as u8, rgb as u8);
    let frame = frame % frames(indicator);
    let centre = (SIZE as f32 - 1.0) / 2.0;
    // Pulsing: the dot's radius breathes between 9 and 14 px.
    let radius = match indicator {
        Indicator::Executing => 14.0 - 1.6 * [0.0, 1.0, 3.0, 2.0][frame],
        _ => 14.0,
    };
    let mut out = Vec::with_capacity(SIZE * SIZE * 4);
    for y in 0..SIZE {
        for x in 0..SIZE {
            let (dx, dy) = (x as f32 - centre, y as f32 - centre);
            let d = (dx * dx + dy * dy).sqrt();
            // Anti-aliased edge: full inside, fading over one pixel.
            let mut alpha = (radius + 0.5 - d).clamp(0.0, 1.0);
            if indicator == Indicator::Reconnecting && d > 6.0 {
                // Spinning: a ring with a gap (an eighth of a turn) that moves each frame.
                let angle = dy.atan2(dx).rem_euclid(std::f32::consts::TAU);
                let sector = (angle / std::f32::consts::TAU * 8.0) as usize % 8;
                if sector == frame {
                    alpha *= 0.15;
                }
                if d < 9.0 {
                    alpha = 0.0;
                }
            }
            out.extend_from_slice(&[r, g, b, (alpha * 255.0).round() as u8]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Indicator; 6] = [
        Indicator::Connected,
        Indicator::Executing,
        Indicator::Warning,
        Indicator::Disconnected,
        Indicator::Paused,
        Indicator::Reconnecting,
    ];

    fn pixel(icon: &[u8], x: usize, y: usize) -> [u8; 4] {
        let i = (y * SIZE + x) * 4;
        [icon[i], icon[i + 1], icon[i + 2], icon[i + 3]]
    }

    #[test]
    fn each_state_is_a_dot_of_its_colour_on_transparent() {
        for indicator in ALL {
            let icon = rgba(indicator, 0);
            assert_eq!(icon.len(), SIZE * SIZE * 4);
            let rgb = indicator.rgb();
            let edge = pixel(&icon, 0, 0);
            assert_eq!(edge[3], 0, "{indicator:?}: corners are transparent");
            // A point on the dot's body (inside the ring for "reconnecting").
            let body = pixel(&icon, SIZE / 2 - 12, SIZE / 2);
            assert_eq!(&body[..3], &[(rgb >> 16) as u8, (rgb >> 8) as u8, rgb as u8], "{indicator:?}");
            assert_eq!(body[3], 255, "{indicator:?}");
        }
    }

    #[test]
    fn animated_states_change_between_frames_and_still_ones_do_not() {
        for indicator in ALL {
            let distinct: std::collections::HashSet<Vec<u8>> = (0..8).map(|f| rgba(indicator, f)).collect();
            assert_eq!(distinct.len(), frames(indicator), "{indicator:?}");
        }
    }
}
