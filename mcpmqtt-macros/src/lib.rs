//! Placeholder until the macro lands.
use proc_macro::TokenStream;
#[proc_macro_attribute]
pub fn tool(_args: TokenStream, item: TokenStream) -> TokenStream { item }
