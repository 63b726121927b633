//! A client for vCenter's VIM and VSLM SOAP APIs.
