//! placeholder

pub mod vnl;
pub use vnl::{
    default_switch, default_switch_path, module_syntax, parse_octal_mode, ArgStyle, DefaultSwitch,
    InvalidMode, KeyError, ModuleSyntax, Vnl, VnlError, MODULES,
};
