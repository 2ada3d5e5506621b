"""Publishers and subscribers for message brokers (each module imports its client lazily).

=================  ===================================  ============================
module             classes                              broker
=================  ===================================  ============================
``queue``          QueuePublisher / QueueSubscriber     ``queue.Queue`` or
                                                        ``multiprocessing.Queue``
``redis``          RedisPublisher / RedisSubscriber     Redis pub/sub
``redis``          RedisQueuePublisher /                Redis lists (each event to
                   RedisQueueSubscriber                 one consumer)
``zmq``            ZeroMQPublisher / ZeroMQSubscriber   ZeroMQ PUB/SUB, no broker
``kafka``          KafkaPublisher / KafkaSubscriber     Kafka (``kafka-python``)
``nodeserver``     NodeServerPublisher /                the node servers of a
                   NodeServerSubscriber                 ``warpstore launch`` job
=================  ===================================  ============================
"""
