//! Windows: `Shell_NotifyIconW` on a hidden window's message loop, on its own `tray` thread.
//!
//! The window is a hidden top-level window (not message-only: those miss the `TaskbarCreated`
//! broadcast Explorer sends when it restarts, after which the icon is added again). Other
//! threads change the state through a mutex and a posted `WM_APP` message; the animation is a
//! `SetTimer` that runs only while an animated state shows.

// Win32 calls are FFI: every `unsafe` block below is one call with arguments built right there
// (owned buffers that outlive the call, handles this thread created).
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use windows_sys::Win32::Foundation::{HWND, LPARAM, LRESULT, POINT, WPARAM};
use windows_sys::Win32::Graphics::Gdi::{
    BI_RGB, BITMAPINFO, BITMAPINFOHEADER, CreateBitmap, CreateDIBSection, DIB_RGB_COLORS, DeleteObject,
    HBITMAP,
};
use windows_sys::Win32::System::LibraryLoader::GetModuleHandleW;
use windows_sys::Win32::UI::Shell::{
    NIF_ICON, NIF_MESSAGE, NIF_TIP, NIM_ADD, NIM_DELETE, NIM_MODIFY, NOTIFYICONDATAW, Shell_NotifyIconW,
};
use windows_sys::Win32::UI::WindowsAndMessaging::{
    AppendMenuW, CreateIconIndirect, CreatePopupMenu, CreateWindowExW, DefWindowProcW, DestroyIcon,
    DestroyMenu, DestroyWindow, DispatchMessageW, GetCursorPos, GetMessageW, HICON, ICONINFO, KillTimer,
    MF_STRING, MSG, PostMessageW, PostQuitMessage, RegisterClassW, RegisterWindowMessageW,
    SetForegroundWindow, SetTimer, TPM_RETURNCMD, TPM_RIGHTBUTTON, TrackPopupMenu, TranslateMessage, WM_APP,
    WM_CLOSE, WM_CONTEXTMENU, WM_DESTROY, WM_LBUTTONUP, WM_RBUTTONUP, WM_TIMER, WNDCLASSW, WS_OVERLAPPED,
};

use crate::{OnAction, State, TrayAction, TrayError, icon};

/// The icon's callback message (mouse events on the icon).
const WM_TRAY: u32 = WM_APP + 1;
/// "The state changed": read it from the shared mutex.
const WM_STATE: u32 = WM_APP + 2;
const ICON_ID: u32 = 1;
const TIMER_ID: usize = 1;
const FRAME_MS: u32 = 250;

/// What the window procedure needs; lives on the tray thread.
struct Ctx {
    shared: Arc<Mutex<State>>,
    shown: State,
    frame: usize,
    on_action: OnAction,
    taskbar_created: u32,
    icon: HICON,
}

thread_local! {
    static CTX: RefCell<Option<Ctx>> = const { RefCell::new(None) };
}

pub(crate) struct WindowsTray {
    shared: Arc<Mutex<State>>,
    /// The window handle as an integer (HWND is a raw pointer, not `Send`).
    hwnd: isize,
}

impl std::fmt::Debug for WindowsTray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WindowsTray")
    }
}

fn wide(text: &str) -> Vec<u16> {
    text.encode_utf16().chain(std::iter::once(0)).collect()
}

impl WindowsTray {
    pub(crate) fn start(on_action: OnAction) -> Result<Self, TrayError> {
        let shared = Arc::new(Mutex::new(State::default()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<isize, String>>();
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("tray".into())
            .spawn(move || run(thread_shared, on_action, &ready_tx))
            .map_err(|e| TrayError::Platform(format!("cannot start the tray thread: {e}")))?;
        let hwnd = ready_rx
            .recv()
            .map_err(|_| TrayError::Platform("the tray thread ended".into()))?
            .map_err(TrayError::Platform)?;
        Ok(Self { shared, hwnd })
    }

    pub(crate) fn set_state(&self, state: State) {
        *self.shared.lock().unwrap_or_else(|p| p.into_inner()) = state;
        unsafe { PostMessageW(self.hwnd as HWND, WM_STATE, 0, 0) };
    }
}

impl Drop for WindowsTray {
    fn drop(&mut self) {
        unsafe { PostMessageW(self.hwnd as HWND, WM_CLOSE, 0, 0) };
    }
}

fn run(
    shared: Arc<Mutex<State>>,
    on_action: OnAction,
    ready: &std::sync::mpsc::Sender<Result<isize, String>>,
) {
    let class = wide("MiniConnectorTray");
    let instance = unsafe { GetModuleHandleW(std::ptr::null()) };
    let wc = WNDCLASSW {
        style: 0,
        lpfnWndProc: Some(wndproc),
        cbClsExtra: 0,
        cbWndExtra: 0,
        hInstance: instance,
        hIcon: std::ptr::null_mut(),
        hCursor: std::ptr::null_mut(),
        hbrBackground: std::ptr::null_mut(),
        lpszMenuName: std::ptr::null(),
        lpszClassName: class.as_ptr(),
    };
    // A second registration (a second Tray in one process) fails harmlessly: the class exists.
    unsafe { RegisterClassW(&wc) };
    let title = wide("Mini Connector");
    let hwnd = unsafe {
        CreateWindowExW(
            0,
            class.as_ptr(),
            title.as_ptr(),
            WS_OVERLAPPED,
            0,
            0,
            0,
            0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            instance,
            std::ptr::null(),
        )
    };
    if hwnd.is_null() {
        let _ = ready.send(Err(format!("CreateWindowExW failed: {}", std::io::Error::last_os_error())));
        return;
    }
    let taskbar_created = unsafe { RegisterWindowMessageW(wide("TaskbarCreated").as_ptr()) };
    let shown = shared.lock().unwrap_or_else(|p| p.into_inner()).clone();
    CTX.with(|ctx| {
        *ctx.borrow_mut() =
            Some(Ctx { shared, shown, frame: 0, on_action, taskbar_created, icon: std::ptr::null_mut() })
    });
    if !add_icon(hwnd) {
        let _ = ready.send(Err(format!("Shell_NotifyIconW failed: {}", std::io::Error::last_os_error())));
        unsafe { DestroyWindow(hwnd) };
        return;
    }
    let _ = ready.send(Ok(hwnd as isize));
    let mut msg: MSG = unsafe { std::mem::zeroed() };
    while unsafe { GetMessageW(&mut msg, std::ptr::null_mut(), 0, 0) } > 0 {
        unsafe {
            TranslateMessage(&msg);
            DispatchMessageW(&msg);
        }
    }
    CTX.with(|ctx| {
        if let Some(ctx) = ctx.borrow_mut().take()
            && !ctx.icon.is_null()
        {
            unsafe { DestroyIcon(ctx.icon) };
        }
    });
}

/// Builds the notify-icon data for the current state (new icon handle, tooltip).
fn icon_data(hwnd: HWND) -> NOTIFYICONDATAW {
    let mut nid: NOTIFYICONDATAW = unsafe { std::mem::zeroed() };
    nid.cbSize = std::mem::size_of::<NOTIFYICONDATAW>() as u32;
    nid.hWnd = hwnd;
    nid.uID = ICON_ID;
    nid.uFlags = NIF_MESSAGE | NIF_ICON | NIF_TIP;
    nid.uCallbackMessage = WM_TRAY;
    CTX.with(|ctx| {
        let mut ctx = ctx.borrow_mut();
        let Some(ctx) = ctx.as_mut() else { return };
        let new_icon = make_icon(&icon::rgba(ctx.shown.indicator, ctx.frame));
        if !ctx.icon.is_null() {
            unsafe { DestroyIcon(ctx.icon) };
        }
        ctx.icon = new_icon;
        nid.hIcon = new_icon;
        let tip = format!("{}\n{}", crate::title(ctx.shown.indicator), ctx.shown.tooltip);
        for (slot, unit) in nid.szTip.iter_mut().zip(tip.encode_utf16().take(127)) {
            *slot = unit;
        }
    });
    nid
}

fn add_icon(hwnd: HWND) -> bool {
    let nid = icon_data(hwnd);
    unsafe { Shell_NotifyIconW(NIM_ADD, &nid) != 0 }
}

/// An HICON from straight RGBA pixels (`icon::SIZE` square): a 32-bit top-down BGRA DIB.
fn make_icon(rgba: &[u8]) -> HICON {
    let size = icon::SIZE as i32;
    let mut header: BITMAPINFO = unsafe { std::mem::zeroed() };
    header.bmiHeader = BITMAPINFOHEADER {
        biSize: std::mem::size_of::<BITMAPINFOHEADER>() as u32,
        biWidth: size,
        biHeight: -size,
        biPlanes: 1,
        biBitCount: 32,
        biCompression: BI_RGB,
        ..unsafe { std::mem::zeroed() }
    };
    let mut bits: *mut std::ffi::c_void = std::ptr::null_mut();
    let color: HBITMAP = unsafe {
        CreateDIBSection(std::ptr::null_mut(), &header, DIB_RGB_COLORS, &mut bits, std::ptr::null_mut(), 0)
    };
    if color.is_null() || bits.is_null() {
        return std::ptr::null_mut();
    }
    let mut bgra = Vec::with_capacity(rgba.len());
    for px in rgba.chunks_exact(4) {
        bgra.extend_from_slice(&[px[2], px[1], px[0], px[3]]);
    }
    unsafe { std::ptr::copy_nonoverlapping(bgra.as_ptr(), bits.cast::<u8>(), bgra.len()) };
    let mask_bits = [0u8; (icon::SIZE * icon::SIZE) / 8];
    let mask = unsafe { CreateBitmap(size, size, 1, 1, mask_bits.as_ptr().cast()) };
    let info = ICONINFO { fIcon: 1, xHotspot: 0, yHotspot: 0, hbmMask: mask, hbmColor: color };
    let icon = unsafe { CreateIconIndirect(&info) };
    unsafe {
        DeleteObject(color);
        DeleteObject(mask);
    }
    icon
}

fn act(action: TrayAction) {
    CTX.with(|ctx| {
        if let Some(ctx) = ctx.borrow().as_ref() {
            (ctx.on_action)(action);
        }
    });
}

fn show_menu(hwnd: HWND) {
    let paused = CTX.with(|ctx| ctx.borrow().as_ref().is_some_and(|c| c.shown.paused));
    let items = crate::menu_labels(paused);
    let menu = unsafe { CreatePopupMenu() };
    if menu.is_null() {
        return;
    }
    for (i, (label, _)) in items.iter().enumerate() {
        let text = wide(label);
        unsafe { AppendMenuW(menu, MF_STRING, i + 1, text.as_ptr()) };
    }
    let mut at = POINT { x: 0, y: 0 };
    unsafe {
        GetCursorPos(&mut at);
        // Without this the menu does not close when the user clicks elsewhere.
        SetForegroundWindow(hwnd);
    }
    let chosen = unsafe {
        TrackPopupMenu(menu, TPM_RETURNCMD | TPM_RIGHTBUTTON, at.x, at.y, 0, hwnd, std::ptr::null())
    };
    unsafe { DestroyMenu(menu) };
    if chosen > 0
        && let Some((_, action)) = items.get(chosen as usize - 1)
    {
        act(*action);
    }
}

/// Applies the shared state (or the next frame) to the icon.
fn refresh(hwnd: HWND, next_frame: bool) {
    let animate = CTX.with(|ctx| {
        let mut ctx = ctx.borrow_mut();
        let ctx = ctx.as_mut()?;
        if next_frame {
            ctx.frame = (ctx.frame + 1) % icon::frames(ctx.shown.indicator);
        } else {
            let state = ctx.shared.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if state.indicator != ctx.shown.indicator {
                ctx.frame = 0;
            }
            ctx.shown = state;
        }
        Some(icon::frames(ctx.shown.indicator) > 1)
    });
    let nid = icon_data(hwnd);
    unsafe { Shell_NotifyIconW(NIM_MODIFY, &nid) };
    if !next_frame {
        unsafe {
            if animate == Some(true) {
                SetTimer(hwnd, TIMER_ID, FRAME_MS, None);
            } else {
                KillTimer(hwnd, TIMER_ID);
            }
        }
    }
}

unsafe extern "system" fn wndproc(hwnd: HWND, msg: u32, wparam: WPARAM, lparam: LPARAM) -> LRESULT {
    let taskbar_created = CTX.with(|ctx| ctx.borrow().as_ref().map_or(0, |c| c.taskbar_created));
    match msg {
        WM_TRAY => {
            match (lparam & 0xFFFF) as u32 {
                WM_LBUTTONUP => act(TrayAction::OpenDashboard),
                WM_RBUTTONUP | WM_CONTEXTMENU => show_menu(hwnd),
                _ => {}
            }
            0
        }
        WM_STATE => {
            refresh(hwnd, false);
            0
        }
        WM_TIMER if wparam == TIMER_ID => {
            refresh(hwnd, true);
            0
        }
        WM_CLOSE => {
            unsafe { DestroyWindow(hwnd) };
            0
        }
        WM_DESTROY => {
            let mut nid: NOTIFYICONDATAW = unsafe { std::mem::zeroed() };
            nid.cbSize = std::mem::size_of::<NOTIFYICONDATAW>() as u32;
            nid.hWnd = hwnd;
            nid.uID = ICON_ID;
            unsafe {
                Shell_NotifyIconW(NIM_DELETE, &nid);
                PostQuitMessage(0);
            }
            0
        }
        m if m != 0 && m == taskbar_created => {
            // Explorer restarted: the icon is gone, add it again.
            add_icon(hwnd);
            0
        }
        _ => unsafe { DefWindowProcW(hwnd, msg, wparam, lparam) },
    }
}
