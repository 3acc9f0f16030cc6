//! Simulated VNC consoles: a real RFB server on each running KVM
//! instance's VNC port, so a console handed out through the vncauthproxy
//! shows a screen.
//!
//! Opt in with [`SimHandle::serve_vnc`] (`synnefo up` does). A supervisor
//! follows the simulator's state (on every job change, and once a second):
//! for every instance whose
//! `GET /2/instances/NAME/console` answers `kind: vnc` (running, KVM) it
//! listens on that host and port; when the instance stops or goes away the
//! listener and its connections close, as QEMU's would.
//!
//! The server speaks RFB 3.3, 3.7 and 3.8 with security type None (what
//! Ganeti's KVM instances offer without a VNC password file, and what the
//! proxy expects unless `backend_password` is set). The screen is
//! [`FB_WIDTH`]x[`FB_HEIGHT`], [`BACKGROUND`] with the instance name in
//! [`FOREGROUND`] in a small built-in bitmap font ([`render_console`] gives
//! the same picture as RGB, for tests). Updates are sent with the Raw
//! encoding in whatever true-colour pixel format the viewer set; as the
//! screen never changes, incremental requests are answered only when the
//! viewer has not yet seen it in its current format.
//!
//! Bounds: [`SimVncConfig`] caps the listeners, the connections per
//! instance and the time for the handshake and for each write.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{Shared, SimHandle};

/// Framebuffer width in pixels.
pub const FB_WIDTH: u16 = 320;
/// Framebuffer height in pixels.
pub const FB_HEIGHT: u16 = 200;
/// Background colour (RGB).
pub const BACKGROUND: [u8; 3] = [0x20, 0x60, 0xa0];
/// Text colour (RGB).
pub const FOREGROUND: [u8; 3] = [0xff, 0xff, 0xff];

/// How often the supervisor looks for changes no job announced.
const POLL: Duration = Duration::from_secs(1);

/// Limits of the simulated VNC servers.
#[derive(Debug, Clone)]
pub struct SimVncConfig {
    /// Instances served at once; others get no listener (logged). Default 256.
    pub max_instances: usize,
    /// Connections per instance at once; more are closed at accept. Default 4.
    pub max_connections_per_instance: usize,
    /// Time for the RFB handshake, and for each write to a viewer. Default 10 s.
    pub io_timeout: Duration,
}

impl Default for SimVncConfig {
    fn default() -> Self {
        Self {
            max_instances: 256,
            max_connections_per_instance: 4,
            io_timeout: Duration::from_secs(10),
        }
    }
}

impl SimHandle {
    /// Serves a VNC screen on every running KVM instance's console port
    /// until the simulator stops: RFB with security None, a
    /// [`FB_WIDTH`]x[`FB_HEIGHT`] screen ([`render_console`]), bounded by
    /// `config`. Instances started, stopped or removed later are followed.
    pub fn serve_vnc(&self, config: SimVncConfig) {
        tokio::spawn(supervise(self.shared.clone(), self.stop.clone(), config));
    }
}

/// Where each served instance's console is: (host, port) -> instance name.
fn consoles(shared: &Shared) -> BTreeMap<(String, u16), String> {
    shared.read(|st| {
        st.instances
            .keys()
            .filter_map(|name| {
                let c = st.console_json(name)?;
                if c.get("kind")?.as_str()? != "vnc" {
                    return None;
                }
                let host = c.get("host")?.as_str()?.to_string();
                let port = u16::try_from(c.get("port")?.as_u64()?).ok()?;
                Some(((host, port), name.clone()))
            })
            .collect()
    })
}

async fn supervise(shared: Arc<Shared>, stop: CancellationToken, config: SimVncConfig) {
    let mut changes = shared.changes.subscribe();
    // (host, port) -> (instance, its listener's stop token; None if bind failed)
    let mut served: BTreeMap<(String, u16), (String, Option<CancellationToken>)> = BTreeMap::new();
    let mut over_limit_logged = false;
    loop {
        let want = consoles(&shared);
        served.retain(|key, (name, token)| {
            let keep = want.get(key) == Some(name);
            if let (false, Some(t)) = (keep, token) {
                t.cancel();
            }
            keep
        });
        for (key, name) in want {
            if served.contains_key(&key) {
                continue;
            }
            if served.len() >= config.max_instances {
                if !over_limit_logged {
                    tracing::warn!(
                        limit = config.max_instances,
                        "simulated VNC: instance limit reached; further consoles stay dark"
                    );
                    over_limit_logged = true;
                }
                break;
            }
            let token = match TcpListener::bind((key.0.as_str(), key.1)).await {
                Ok(listener) => {
                    let token = stop.child_token();
                    tokio::spawn(listen(
                        listener,
                        name.clone(),
                        config.clone(),
                        token.clone(),
                    ));
                    tracing::debug!(instance = %name, host = %key.0, port = key.1, "simulated VNC server listening");
                    Some(token)
                }
                Err(e) => {
                    tracing::warn!(instance = %name, host = %key.0, port = key.1, error = %e,
                        "simulated VNC: cannot listen on the console port");
                    None
                }
            };
            served.insert(key, (name, token));
        }
        // Jobs announce their changes; changes made behind Ganeti's back
        // (the handle's test knobs) are picked up by the poll.
        tokio::select! {
            () = stop.cancelled() => break,
            r = changes.changed() => if r.is_err() { break },
            () = tokio::time::sleep(POLL) => {}
        }
    }
    for (_, token) in served.into_values() {
        if let Some(t) = token {
            t.cancel();
        }
    }
}

async fn listen(
    listener: TcpListener,
    name: String,
    config: SimVncConfig,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(config.max_connections_per_instance));
    let screen = Arc::new(render_console(&name));
    let name = Arc::new(name);
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(instance = %name, "simulated VNC: connection limit reached");
            continue;
        };
        let (stop, name, screen, io_timeout) = (
            stop.clone(),
            name.clone(),
            screen.clone(),
            config.io_timeout,
        );
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                r = session(stream, &name, &screen, io_timeout) => {
                    if let Err(e) = r {
                        tracing::debug!(instance = %name, error = %e, "simulated VNC session ended");
                    }
                }
            }
            drop(permit);
        });
    }
}

/// A viewer's pixel format (true colour only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PixelFormat {
    bytes: usize,
    big_endian: bool,
    max: [u16; 3],
    shift: [u8; 3],
}

impl PixelFormat {
    /// 32 bpp, depth 24, little endian, red at bit 16: what ServerInit says.
    const SERVER: Self = Self {
        bytes: 4,
        big_endian: false,
        max: [255, 255, 255],
        shift: [16, 8, 0],
    };

    /// The 16-byte PIXEL_FORMAT structure.
    fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0] = (self.bytes * 8) as u8;
        b[1] = 24;
        b[2] = u8::from(self.big_endian);
        b[3] = 1;
        for i in 0..3 {
            b[4 + 2 * i..6 + 2 * i].copy_from_slice(&self.max[i].to_be_bytes());
        }
        b[10..13].copy_from_slice(&self.shift);
        b
    }

    fn decode(b: &[u8; 16]) -> Result<Self, String> {
        let bytes = match b[0] {
            8 => 1,
            16 => 2,
            32 => 4,
            bpp => return Err(format!("unsupported bits-per-pixel {bpp}")),
        };
        if b[3] == 0 {
            return Err("colour-map pixel formats are not supported".into());
        }
        let max = [
            u16::from_be_bytes([b[4], b[5]]),
            u16::from_be_bytes([b[6], b[7]]),
            u16::from_be_bytes([b[8], b[9]]),
        ];
        let shift = [b[10], b[11], b[12]];
        if shift.iter().any(|&s| s >= 32) {
            return Err("colour shift beyond 31".into());
        }
        Ok(Self {
            bytes,
            big_endian: b[2] != 0,
            max,
            shift,
        })
    }

    fn pixel(&self, rgb: [u8; 3], out: &mut Vec<u8>) {
        let mut v: u32 = 0;
        for ((c, max), shift) in rgb.iter().zip(self.max).zip(self.shift) {
            v |= (u32::from(*c) * u32::from(max) / 255) << shift;
        }
        let all = if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        match (self.bytes, self.big_endian) {
            (4, _) => out.extend_from_slice(&all),
            (2, false) => out.extend_from_slice(&all[..2]),
            (2, true) => out.extend_from_slice(&all[2..]),
            (_, false) => out.push(all[0]),
            (_, true) => out.push(all[3]),
        }
    }
}

async fn write(
    s: &mut TcpStream,
    bytes: &[u8],
    limit: Duration,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tokio::time::timeout(limit, s.write_all(bytes)).await??;
    Ok(())
}

/// One viewer: handshake (security None), ServerInit, then client messages.
async fn session(
    mut s: TcpStream,
    name: &str,
    screen: &[[u8; 3]],
    io_timeout: Duration,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let _ = s.set_nodelay(true);
    // Handshake, within io_timeout.
    tokio::time::timeout(io_timeout, async {
        s.write_all(b"RFB 003.008\n").await?;
        let mut v = [0u8; 12];
        s.read_exact(&mut v).await?;
        let minor = match &v {
            b"RFB 003.003\n" | b"RFB 003.005\n" => 3,
            b"RFB 003.007\n" => 7,
            v if v.starts_with(b"RFB 003.0") || v.starts_with(b"RFB 004.") => 8,
            _ => return Err(std::io::Error::other("not an RFB viewer")),
        };
        if minor == 3 {
            s.write_all(&1u32.to_be_bytes()).await?;
        } else {
            s.write_all(&[1, 1]).await?;
            let mut choice = [0u8; 1];
            s.read_exact(&mut choice).await?;
            if choice[0] != 1 {
                return Err(std::io::Error::other("viewer did not choose security None"));
            }
            if minor == 8 {
                s.write_all(&0u32.to_be_bytes()).await?;
            }
        }
        let mut client_init = [0u8; 1];
        s.read_exact(&mut client_init).await?;
        let mut init = Vec::with_capacity(24 + name.len());
        init.extend_from_slice(&FB_WIDTH.to_be_bytes());
        init.extend_from_slice(&FB_HEIGHT.to_be_bytes());
        init.extend_from_slice(&PixelFormat::SERVER.encode());
        init.extend_from_slice(&(name.len() as u32).to_be_bytes());
        init.extend_from_slice(name.as_bytes());
        s.write_all(&init).await
    })
    .await??;

    let mut format = PixelFormat::SERVER;
    let mut seen = false;
    loop {
        let kind = match s.read_u8().await {
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        match kind {
            0 => {
                let mut b = [0u8; 19];
                s.read_exact(&mut b).await?;
                let mut pf = [0u8; 16];
                pf.copy_from_slice(&b[3..]);
                format = PixelFormat::decode(&pf)?;
                seen = false;
            }
            2 => {
                let _pad = s.read_u8().await?;
                let n = s.read_u16().await?;
                let mut skip = vec![0u8; usize::from(n) * 4];
                s.read_exact(&mut skip).await?;
            }
            3 => {
                let incremental = s.read_u8().await? != 0;
                let x = s.read_u16().await?;
                let y = s.read_u16().await?;
                let w = s.read_u16().await?;
                let h = s.read_u16().await?;
                if incremental && seen {
                    continue;
                }
                let update = framebuffer_update(screen, &format, x, y, w, h);
                write(&mut s, &update, io_timeout).await?;
                seen = true;
            }
            4 => {
                let mut b = [0u8; 7];
                s.read_exact(&mut b).await?;
            }
            5 => {
                let mut b = [0u8; 5];
                s.read_exact(&mut b).await?;
            }
            6 => {
                let mut pad = [0u8; 3];
                s.read_exact(&mut pad).await?;
                let len = s.read_u32().await?;
                if len > 1 << 20 {
                    return Err(format!("ClientCutText of {len} bytes").into());
                }
                let mut skip = (&mut s).take(u64::from(len));
                tokio::io::copy(&mut skip, &mut tokio::io::sink()).await?;
            }
            other => return Err(format!("unsupported client message type {other}").into()),
        }
    }
}

/// A FramebufferUpdate with one Raw rectangle: the requested area clipped
/// to the screen (the whole screen if the request lies outside it).
fn framebuffer_update(
    screen: &[[u8; 3]],
    format: &PixelFormat,
    x: u16,
    y: u16,
    w: u16,
    h: u16,
) -> Vec<u8> {
    let (fw, fh) = (FB_WIDTH, FB_HEIGHT);
    let (mut x, mut y) = (x.min(fw), y.min(fh));
    let (mut w, mut h) = (w.min(fw - x), h.min(fh - y));
    if w == 0 || h == 0 {
        (x, y, w, h) = (0, 0, fw, fh);
    }
    let mut out = Vec::with_capacity(16 + usize::from(w) * usize::from(h) * format.bytes);
    out.extend_from_slice(&[0, 0, 0, 1]);
    for v in [x, y, w, h] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&0i32.to_be_bytes());
    for row in y..y + h {
        let start = usize::from(row) * usize::from(fw);
        for px in &screen[start + usize::from(x)..start + usize::from(x + w)] {
            format.pixel(*px, &mut out);
        }
    }
    out
}

/// The simulated screen of instance `name`, row-major RGB,
/// [`FB_WIDTH`]x[`FB_HEIGHT`]: [`BACKGROUND`], and the name in
/// [`FOREGROUND`] (upper case, 5x7 glyphs scaled up to 3x, centred;
/// characters without a glyph show as `?`; too long a name is cut).
pub fn render_console(name: &str) -> Vec<[u8; 3]> {
    let (w, h) = (usize::from(FB_WIDTH), usize::from(FB_HEIGHT));
    let mut fb = vec![BACKGROUND; w * h];
    let glyphs: Vec<[u8; 7]> = name.chars().map(glyph).collect();
    // Each glyph takes 6 columns (5 + 1 spacing); pick the largest scale that fits.
    let scale = (1..=3)
        .rev()
        .find(|s| glyphs.len() * 6 * s <= w - 16)
        .unwrap_or(1);
    let fit = (w - 16) / (6 * scale);
    let glyphs = &glyphs[..glyphs.len().min(fit)];
    let text_w = (glyphs.len() * 6).saturating_sub(1) * scale;
    let x0 = (w - text_w) / 2;
    let y0 = (h - 7 * scale) / 2;
    for (i, g) in glyphs.iter().enumerate() {
        for (row, bits) in g.iter().enumerate() {
            for col in 0..5 {
                if bits & (0x10 >> col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let px = x0 + (i * 6 + col) * scale + dx;
                        let py = y0 + row * scale + dy;
                        fb[py * w + px] = FOREGROUND;
                    }
                }
            }
        }
    }
    fb
}

/// A 5x7 glyph, one byte per row, bit 4 leftmost.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        '_' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '/' => [0x01, 0x01, 0x02, 0x04, 0x08, 0x10, 0x10],
        ' ' => [0; 7],
        _ => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SimConfig, SimNodeConfig, Simulator};

    #[test]
    fn screen_has_the_background_and_the_name() {
        let fb = render_console("snf-42");
        assert_eq!(fb.len(), 320 * 200);
        let lit = fb.iter().filter(|p| **p == FOREGROUND).count();
        // s n f - 4 2 at scale 3: the glyphs' set bits times 9.
        let bits: u32 = "snf-42".chars().flat_map(glyph).map(u8::count_ones).sum();
        assert_eq!(lit, bits as usize * 9);
        assert_eq!(
            lit + fb.iter().filter(|p| **p == BACKGROUND).count(),
            fb.len()
        );
        assert_eq!(fb[0], BACKGROUND);
        assert_ne!(render_console("snf-43"), fb, "names differ on screen");
        // Long names shrink, then get cut; never panic.
        let long = "x".repeat(500);
        assert!(render_console(&long).contains(&FOREGROUND));
        assert!(render_console("").iter().all(|p| *p == BACKGROUND));
        assert!(render_console("ünïcode☃").contains(&FOREGROUND));
    }

    #[test]
    fn pixel_formats() {
        let mut out = Vec::new();
        PixelFormat::SERVER.pixel([0x12, 0x34, 0x56], &mut out);
        assert_eq!(out, [0x56, 0x34, 0x12, 0]);
        // noVNC's: 32 bpp, red at bit 0.
        let novnc = PixelFormat {
            shift: [0, 8, 16],
            ..PixelFormat::SERVER
        };
        out.clear();
        novnc.pixel([0x12, 0x34, 0x56], &mut out);
        assert_eq!(out, [0x12, 0x34, 0x56, 0]);
        // RGB565 big endian.
        let rgb565 = PixelFormat {
            bytes: 2,
            big_endian: true,
            max: [31, 63, 31],
            shift: [11, 5, 0],
        };
        out.clear();
        rgb565.pixel([255, 255, 255], &mut out);
        assert_eq!(out, [0xff, 0xff]);
        assert_eq!(PixelFormat::decode(&rgb565.encode()).unwrap(), rgb565);
        let mut cmap = PixelFormat::SERVER.encode();
        cmap[3] = 0;
        assert!(PixelFormat::decode(&cmap).is_err());
        let mut bpp = PixelFormat::SERVER.encode();
        bpp[0] = 24;
        assert!(PixelFormat::decode(&bpp).is_err());
    }

    #[test]
    fn updates_clip_to_the_screen() {
        let fb = render_console("a");
        let u = framebuffer_update(&fb, &PixelFormat::SERVER, 310, 190, 100, 100);
        assert_eq!(&u[4..12], &[1, 54, 0, 190, 0, 10, 0, 10]);
        assert_eq!(u.len(), 16 + 10 * 10 * 4);
        let u = framebuffer_update(&fb, &PixelFormat::SERVER, 400, 400, 1, 1);
        assert_eq!(&u[4..12], &[0, 0, 0, 0, 1, 64, 0, 200]);
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    async fn sim_with_one_instance() -> (crate::SimHandle, u16) {
        let base = free_port();
        let sim = Simulator::builder()
            .config(SimConfig {
                nodes: vec![SimNodeConfig {
                    name: "node1.vnc.sim".into(),
                    ip: Some("127.0.0.1".into()),
                    ..SimNodeConfig::default()
                }],
                vnc_port_base: base,
                ..SimConfig::default()
            })
            .instances(1)
            .start()
            .await
            .unwrap();
        (sim, base)
    }

    async fn connect(port: u16) -> TcpStream {
        for _ in 0..200 {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", port)).await {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("nothing listens on {port}");
    }

    /// Handshake as a 3.8 viewer; returns ServerInit's name.
    async fn handshake(s: &mut TcpStream) -> String {
        let mut v = [0u8; 12];
        s.read_exact(&mut v).await.unwrap();
        assert_eq!(&v, b"RFB 003.008\n");
        s.write_all(b"RFB 003.008\n").await.unwrap();
        let mut types = [0u8; 2];
        s.read_exact(&mut types).await.unwrap();
        assert_eq!(types, [1, 1]);
        s.write_all(&[1]).await.unwrap();
        assert_eq!(s.read_u32().await.unwrap(), 0);
        s.write_all(&[1]).await.unwrap();
        let mut init = [0u8; 24];
        s.read_exact(&mut init).await.unwrap();
        assert_eq!(&init[..4], &[1, 64, 0, 200]);
        let mut name =
            vec![0u8; u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize];
        s.read_exact(&mut name).await.unwrap();
        String::from_utf8(name).unwrap()
    }

    #[tokio::test]
    async fn a_viewer_sees_the_instance_screen_in_its_pixel_format() {
        let (sim, port) = sim_with_one_instance().await;
        let name = sim.instance_names().remove(0);
        sim.serve_vnc(SimVncConfig::default());
        let mut s = connect(port).await;
        assert_eq!(handshake(&mut s).await, name);
        // noVNC's format: 32 bpp little endian, red at bit 0.
        let novnc = PixelFormat {
            shift: [0, 8, 16],
            ..PixelFormat::SERVER
        };
        let mut msg = vec![0u8, 0, 0, 0];
        msg.extend_from_slice(&novnc.encode());
        msg.extend_from_slice(&[2, 0, 0, 2, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x21]);
        msg.extend_from_slice(&[3, 0, 0, 0, 0, 0, 1, 64, 0, 200]);
        s.write_all(&msg).await.unwrap();
        let mut head = [0u8; 16];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(&head[..12], &[0, 0, 0, 1, 0, 0, 0, 0, 1, 64, 0, 200]);
        let mut pixels = vec![0u8; 320 * 200 * 4];
        s.read_exact(&mut pixels).await.unwrap();
        let expected: Vec<u8> = render_console(&name)
            .iter()
            .flat_map(|[r, g, b]| [*r, *g, *b, 0])
            .collect();
        assert!(
            pixels == expected,
            "framebuffer differs from render_console"
        );
        // An incremental request for an unchanged screen gets no answer;
        // key and pointer events are read and ignored.
        s.write_all(&[3, 1, 0, 0, 0, 0, 1, 64, 0, 200])
            .await
            .unwrap();
        s.write_all(&[4, 1, 0, 0, 0, 0, 0, 0x61, 5, 0, 0, 1, 0, 1])
            .await
            .unwrap();
        let mut one = [0u8; 1];
        assert!(
            tokio::time::timeout(Duration::from_millis(200), s.read(&mut one))
                .await
                .is_err(),
            "nothing is sent for an unchanged screen"
        );
        // Stopping the instance closes its console, as QEMU's goes away.
        assert!(sim.set_instance_running(&name, false));
        let closed = tokio::time::timeout(Duration::from_secs(5), s.read(&mut one)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the console port still listens after the instance stopped");
    }

    #[tokio::test]
    async fn connections_per_instance_and_handshake_time_are_bounded() {
        let (sim, port) = sim_with_one_instance().await;
        sim.serve_vnc(SimVncConfig {
            max_connections_per_instance: 2,
            io_timeout: Duration::from_millis(300),
            ..SimVncConfig::default()
        });
        let mut a = connect(port).await;
        let mut b = connect(port).await;
        let mut v = [0u8; 12];
        a.read_exact(&mut v).await.unwrap();
        b.read_exact(&mut v).await.unwrap();
        // A third one is closed without a greeting.
        let mut c = connect(port).await;
        let mut buf = [0u8; 12];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "third connection got a greeting");
        // The two silent viewers are dropped after the handshake timeout...
        for s in [&mut a, &mut b] {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .expect("not closed after the handshake timeout")
                .unwrap_or(0);
            assert_eq!(n, 0);
        }
        // ...which frees their places.
        let mut d = connect(port).await;
        d.read_exact(&mut v).await.unwrap();
        assert_eq!(&v, b"RFB 003.008\n");
        // A non-RFB greeting is refused.
        d.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), d.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
}
