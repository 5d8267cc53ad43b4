//! Which GPU processes outside gpuwarden's reservations are games, found as
//! Steam and launchers mark them, and which are the desktop (never games).
//!
//! - Steam starts every game, native or Proton, under its `reaper` process
//!   (`reaper SteamLaunch AppId=<N> -- ...`), sets `SteamAppId`/`SteamGameId`
//!   in the game's environment, and newer clients put it in a systemd scope
//!   `app-steam-app<N>-<pid>.scope`.
//! - `gamemoderun` (Feral's GameMode, used by Lutris, Heroic and Steam launch
//!   options) preloads `libgamemodeauto`: its games carry it in `LD_PRELOAD`.
//!   Games that register with `gamemoded` over D-Bus by themselves are not
//!   seen: reading that would put a D-Bus stack in the watchdog.
//! - `[watch] games` names games by command name.
//! - `[watch] desktop` names what is never a game, whatever the rest says: the
//!   Steam client (`steam`, `steamwebhelper`, its hardware-accelerated UI),
//!   display servers, compositors, browsers' GPU processes.
//!
//! Command names come from `/proc/PID/comm`, which the kernel cuts to 15
//! characters: `wine64-preloader` (16) is matched by its first 15.

use crate::base::proc::Processes;

/// What a GPU process outside the reservations is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Class {
    /// A game, with how it is named in events: `dota2 (Steam app 570, pid 4242)`.
    Game(String),
    Desktop,
    Other,
}

/// How deep to look for Steam's reaper among a process's ancestors.
const MAX_ANCESTORS: usize = 32;

/// Whether command name `comm` is `name` (the kernel keeps 15 characters of it).
pub fn is_named(comm: &str, name: &str) -> bool {
    comm == name || (name.len() > 15 && name.get(..15) == Some(comm)) || name.strip_suffix('*').is_some_and(|prefix| comm.starts_with(prefix))
}

/// The Steam app of a reaper's command line (`reaper SteamLaunch AppId=570 -- ...`;
/// `reaper` may follow an interpreter).
fn reaper_app(args: &[String]) -> Option<Option<String>> {
    let at = args.windows(2).position(|w| w[0].rsplit('/').next() == Some("reaper") && w[1] == "SteamLaunch")?;
    let before_game = args[at..].iter().take_while(|a| *a != "--");
    Some(before_game.into_iter().find_map(|a| a.strip_prefix("AppId=").map(str::to_owned)))
}

/// The Steam app of a scope in a cgroup path (`app-steam-app570-4242.scope`).
fn scope_app(cgroup: &str) -> Option<String> {
    let rest = &cgroup[cgroup.find("app-steam-app")? + "app-steam-app".len()..];
    let app: String = rest.chars().take_while(char::is_ascii_digit).collect();
    (!app.is_empty()).then_some(app)
}

/// What `pid` (command name `comm`, as NVML or `/proc` names it) is.
pub fn classify(pid: i32, comm: &str, processes: &dyn Processes, games: &[String], desktop: &[String]) -> Class {
    let comm = processes.comm(pid).unwrap_or_else(|| comm.to_string());
    if desktop.iter().any(|d| is_named(&comm, d)) {
        return Class::Desktop;
    }
    let game = |how: Option<String>| Class::Game(match how {
        Some(how) => format!("{comm} ({how}, pid {pid})"),
        None => format!("{comm} (pid {pid})"),
    });
    let steam = |app: Option<String>| Some(app.map_or_else(|| "Steam".to_string(), |a| format!("Steam app {a}")));
    // Steam's reaper among its ancestors (or itself).
    let mut at = pid;
    for _ in 0..MAX_ANCESTORS {
        if let Some(app) = processes.cmdline(at).as_deref().and_then(reaper_app) {
            return game(steam(app));
        }
        match processes.parent(at) {
            Some(parent) if parent > 1 && parent != at => at = parent,
            _ => break,
        }
    }
    if let Some(env) = processes.environ(pid) {
        let var = |name: &str| env.iter().find_map(|e| e.strip_prefix(name)?.strip_prefix('=').map(str::to_owned));
        if let Some(app) = var("SteamAppId").or_else(|| var("SteamGameId")) {
            return game(steam(Some(app)));
        }
        if var("LD_PRELOAD").is_some_and(|p| p.contains("libgamemodeauto")) {
            return game(Some("GameMode".into()));
        }
    }
    if let Some(app) = processes.cgroup(pid).as_deref().and_then(scope_app) {
        return game(steam(Some(app)));
    }
    if games.iter().any(|g| is_named(&comm, g)) {
        return game(None);
    }
    Class::Other
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// One process of the table: (comm, parent, cmdline, environ, cgroup).
    type Proc = (&'static str, i32, Vec<&'static str>, Vec<&'static str>, &'static str);

    /// A process table by pid.
    #[derive(Default)]
    struct Table(HashMap<i32, Proc>);

    impl Processes for Table {
        fn start_time(&self, pid: i32) -> Option<u64> {
            self.0.contains_key(&pid).then_some(1)
        }
        fn cgroup(&self, pid: i32) -> Option<String> {
            self.0.get(&pid).map(|p| p.4.to_string())
        }
        fn comm(&self, pid: i32) -> Option<String> {
            self.0.get(&pid).map(|p| p.0.to_string())
        }
        fn parent(&self, pid: i32) -> Option<i32> {
            self.0.get(&pid).map(|p| p.1)
        }
        fn cmdline(&self, pid: i32) -> Option<Vec<String>> {
            self.0.get(&pid).map(|p| p.2.iter().map(|s| s.to_string()).collect())
        }
        fn environ(&self, pid: i32) -> Option<Vec<String>> {
            self.0.get(&pid).map(|p| p.3.iter().map(|s| s.to_string()).collect())
        }
    }

    fn defaults() -> (Vec<String>, Vec<String>) {
        let w = crate::config::Config::default().watch;
        (w.games, w.desktop)
    }

    #[test]
    fn steam_games_are_found_by_reaper_environment_or_scope_and_named_with_the_app() {
        let (games, desktop) = defaults();
        let mut t = Table::default();
        t.0.insert(100, ("steam", 1, vec!["/home/ana/.steam/steam.sh"], vec![], "/user.slice"));
        t.0.insert(200, ("reaper", 100, vec!["/home/ana/.steam/ubuntu12_32/reaper", "SteamLaunch", "AppId=570", "--", "./dota2"], vec![], "/user.slice"));
        t.0.insert(201, ("dota2", 200, vec!["./dota2"], vec![], "/user.slice"));
        t.0.insert(300, ("cs2", 1, vec!["cs2"], vec!["HOME=/home/ana", "SteamAppId=730"], "/user.slice"));
        t.0.insert(400, ("hl2_linux", 1, vec!["hl2"], vec![], "0::/user.slice/user-1000.slice/app-steam-app220-4242.scope"));
        t.0.insert(500, ("celeste", 1, vec!["celeste"], vec!["LD_PRELOAD=/usr/$LIB/libgamemodeauto.so.0"], "/user.slice"));
        t.0.insert(600, ("wine64-preloade", 1, vec!["wine64-preloader"], vec![], "/user.slice"));
        t.0.insert(700, ("python3", 1, vec!["python3", "train.py"], vec![], "/user.slice"));
        let c = |pid| classify(pid, "?", &t, &games, &desktop);
        assert_eq!(c(201), Class::Game("dota2 (Steam app 570, pid 201)".into()));
        assert_eq!(c(300), Class::Game("cs2 (Steam app 730, pid 300)".into()));
        assert_eq!(c(400), Class::Game("hl2_linux (Steam app 220, pid 400)".into()));
        assert_eq!(c(500), Class::Game("celeste (GameMode, pid 500)".into()));
        assert_eq!(c(600), Class::Game("wine64-preloade (pid 600)".into()), "a 16-character default matches the kernel's 15");
        assert_eq!(c(700), Class::Other);
        assert_eq!(c(100), Class::Desktop, "the Steam client is no game");
    }

    #[test]
    fn the_desktop_is_never_a_game() {
        let (games, desktop) = defaults();
        let mut t = Table::default();
        for (pid, comm) in [(1, "steamwebhelper"), (2, "Xorg"), (3, "Xwayland"), (4, "gnome-shell"), (5, "kwin_wayland"), (6, "plasmashell"), (7, "sway")] {
            t.0.insert(pid + 10, (comm, 1, vec![comm], vec!["SteamAppId=570"], "/user.slice"));
            assert_eq!(classify(pid + 10, comm, &t, &games, &desktop), Class::Desktop, "{comm}");
        }
        assert_eq!(classify(99, "steamwebhelper", &Table::default(), &games, &desktop), Class::Desktop, "NVML's name when /proc has none");
    }

    #[test]
    fn names_match_as_the_kernel_cuts_them() {
        assert!(is_named("wine64-preloade", "wine64-preloader"));
        assert!(is_named("kwin_x11", "kwin_*"));
        assert!(!is_named("wine64", "wine64-preloader"));
        assert!(!is_named("steam", "steamwebhelper"));
    }
}
