//! Test support for roomkit's end-to-end suite: a way to start a server and connect
//! clients that the behaviour tests are generic over.
